//! S/MIME signatures with an X.509 certificate and key the administrator
//! gives (PEM), for the HEPiX image list ([`crate::export::hepix`]): a
//! `multipart/signed` message whose first part is the signed text and whose
//! second is a detached CMS SignedData (RFC 5652; SHA-256, RSA PKCS #1 v1.5
//! or ECDSA P-256), as `openssl smime -sign` writes it and `openssl smime
//! -verify` (which atrope and vmcatcher run) reads it. Pure Rust: RustCrypto's
//! `cms`, `x509-cert`, `rsa` and `p256`.
//!
//! The certificate's subject and issuer are also given in OpenSSL's one-line
//! form (`/C=CH/O=CERN/CN=...`), which is how atrope compares a list's
//! `hv:endorser` with the certificate that signed it.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::ContentInfo;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::asn1::{ObjectIdentifier, SetOfVec};
use der::{Decode, Encode, Tag, Tagged};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use vmrepo_repo::{Error, ErrorKind, Result};
use x509_cert::Certificate;
use x509_cert::attr::{Attribute, AttributeValue};
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName, name::GeneralName};
use x509_cert::name::Name;

/// The largest certificate or key file read.
const MAX_PEM_FILE: u64 = 1 << 20;
/// The most certificates a chain file may hold.
const MAX_CHAIN: usize = 16;

/// A certificate and the key that signs with it.
pub struct SmimeSigner {
    /// The signer's certificate first, then any others the file holds (its
    /// chain), all carried in each signature.
    chain: Vec<Certificate>,
    key: Key,
    /// The subject, OpenSSL's one-line form: `/DC=org/DC=example/CN=vm.example.org`.
    pub subject: String,
    /// The issuer, the same way.
    pub issuer: String,
    /// The subject's common name, or its whole DN when it has none.
    pub common_name: String,
    /// An e-mail address from the certificate (subject alternative name,
    /// then the subject's `emailAddress`), or empty.
    pub email: String,
    /// When the certificate expires.
    pub not_after: Timestamp,
}

enum Key {
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    P256(Box<p256::ecdsa::SigningKey>),
}

/// A certificate or key file, as the minisign key is read
/// ([`crate::key::read_key_file`]).
fn read(file: &Path, what: &str) -> Result<Vec<u8>> {
    crate::key::read_key_file(file, MAX_PEM_FILE, &format!("the S/MIME {what}"))
}

fn bad(what: &Path, msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("{}: {msg}", what.display()))
}

impl SmimeSigner {
    /// Reads a PEM certificate file (the signer's certificate first, then
    /// its chain if wanted) and a PEM private key (PKCS #8, PKCS #1 RSA or
    /// SEC1 EC, unencrypted), and checks that they belong together, that
    /// the certificate is valid at `now` and may sign S/MIME messages.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a file that cannot be read,
    /// [`ErrorKind::InvalidInput`] naming the file and the problem otherwise.
    pub fn load(cert_file: &Path, key_file: &Path, now: Timestamp) -> Result<SmimeSigner> {
        SmimeSigner::load_with_password(cert_file, key_file, None, now)
    }

    /// As [`SmimeSigner::load`], for a key that may be encrypted (PKCS #8,
    /// as `openssl pkcs8 -topk8 -v2 aes-256-cbc` makes it): `password`
    /// decrypts it.
    ///
    /// # Errors
    /// As [`SmimeSigner::load`]; [`ErrorKind::InvalidInput`] naming the key
    /// file for an encrypted key without a password or with a wrong one.
    pub fn load_with_password(
        cert_file: &Path,
        key_file: &Path,
        password: Option<&str>,
        now: Timestamp,
    ) -> Result<SmimeSigner> {
        let cert_pem = read(cert_file, "certificate")?;
        let chain = Certificate::load_pem_chain(&cert_pem)
            .map_err(|e| bad(cert_file, format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(bad(cert_file, "holds no certificate"));
        }
        if chain.len() > MAX_CHAIN {
            return Err(bad(cert_file, format!("holds more than {MAX_CHAIN} certificates")));
        }
        let key_pem = read(key_file, "key")?;
        let key = read_key(key_file, &key_pem, password)?;
        let cert = &chain[0];
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        let matches = match &key {
            Key::Rsa(k) => {
                let public = rsa::RsaPublicKey::from(k.as_ref().as_ref());
                spki::EncodePublicKey::to_public_key_der(&public)
                    .ok()
                    .and_then(|d| spki::SubjectPublicKeyInfoOwned::from_der(d.as_bytes()).ok())
                    .is_some_and(|mine| mine.subject_public_key == spki.subject_public_key)
            }
            Key::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                spki.subject_public_key.raw_bytes() == point.as_bytes()
            }
        };
        if !matches {
            return Err(bad(key_file, format!("is not the key of the certificate {}", cert_file.display())));
        }
        let secs = |t: x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs()).ok();
        let not_before = secs(tbs.validity.not_before).and_then(|s| Timestamp::from_second(s).ok());
        let not_after = secs(tbs.validity.not_after).and_then(|s| Timestamp::from_second(s).ok());
        let (Some(not_before), Some(not_after)) = (not_before, not_after) else {
            return Err(bad(cert_file, "the certificate's validity cannot be read"));
        };
        if now < not_before || now > not_after {
            return Err(bad(
                cert_file,
                format!("the certificate is valid from {not_before} to {not_after}, not now"),
            ));
        }
        check_usage(cert_file, cert)?;
        let subject = one_line(&tbs.subject).map_err(|e| bad(cert_file, format!("its subject: {e}")))?;
        let issuer = one_line(&tbs.issuer).map_err(|e| bad(cert_file, format!("its issuer: {e}")))?;
        let common_name = attribute(&tbs.subject, CN).unwrap_or_else(|| subject.clone());
        let email = san_email(cert).or_else(|| attribute(&tbs.subject, EMAIL)).unwrap_or_default();
        Ok(SmimeSigner { chain, key, subject, issuer, common_name, email, not_after })
    }

    /// `content` signed as a `multipart/signed` S/MIME message, dated
    /// `time`. The content must be canonical text (every line ended by
    /// CRLF but the last, which is not ended) and hold no line that starts
    /// with `--`: it is signed as it is, and readers take it as it is.
    ///
    /// # Errors
    /// Content that is not canonical, or a signing failure.
    pub fn sign(&self, content: &[u8], time: Timestamp) -> Result<Vec<u8>> {
        let lone_lf =
            content.iter().enumerate().any(|(i, b)| *b == b'\n' && (i == 0 || content[i - 1] != b'\r'));
        let lone_cr =
            content.iter().enumerate().any(|(i, b)| *b == b'\r' && content.get(i + 1) != Some(&b'\n'));
        if lone_lf
            || lone_cr
            || content.ends_with(b"\n")
            || content.split(|b| *b == b'\n').any(|l| l.starts_with(b"--"))
        {
            return Err(Error::new(ErrorKind::InvalidInput, "S/MIME: the content is not canonical text"));
        }
        let der = self.signed_data(content, time)?;
        Ok(multipart(content, &der))
    }

    /// The detached CMS SignedData (DER) over `content`.
    fn signed_data(&self, content: &[u8], time: Timestamp) -> Result<Vec<u8>> {
        let err =
            |e: &dyn std::fmt::Display| Error::new(ErrorKind::InvalidInput, format!("S/MIME signing: {e}"));
        let digest = Sha256::digest(content);
        let econtent = EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None };
        let cert = &self.chain[0];
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        });
        let digest_alg = AlgorithmIdentifierOwned { oid: ID_SHA_256, parameters: None };
        let signing_time = signing_time(time).map_err(|e| err(&e))?;
        let mut builder = SignedDataBuilder::new(&econtent);
        builder.add_digest_algorithm(digest_alg.clone()).map_err(|e| err(&e))?;
        for c in &self.chain {
            builder.add_certificate(CertificateChoices::Certificate(c.clone())).map_err(|e| err(&e))?;
        }
        match &self.key {
            Key::Rsa(k) => {
                let mut si = SignerInfoBuilder::new(k.as_ref(), sid, digest_alg, &econtent, Some(&digest))
                    .map_err(|e| err(&e))?;
                si.add_signed_attribute(signing_time).map_err(|e| err(&e))?;
                builder.add_signer_info::<_, rsa::pkcs1v15::Signature>(si).map_err(|e| err(&e))?;
            }
            Key::P256(k) => {
                let mut si = SignerInfoBuilder::new(k.as_ref(), sid, digest_alg, &econtent, Some(&digest))
                    .map_err(|e| err(&e))?;
                si.add_signed_attribute(signing_time).map_err(|e| err(&e))?;
                builder.add_signer_info::<_, p256::ecdsa::DerSignature>(si).map_err(|e| err(&e))?;
            }
        }
        let info: ContentInfo = builder.build().map_err(|e| err(&e))?;
        info.to_der().map_err(|e| err(&e))
    }
}

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const ID_EMAIL_PROTECTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const ID_ANY_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");
const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const EMAIL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");

/// The signing-time attribute (RFC 5652 § 11.3): UTCTime until 2049.
fn signing_time(time: Timestamp) -> der::Result<Attribute> {
    let secs = u64::try_from(time.as_second()).map_err(|_| der::Error::from(der::ErrorKind::DateTime))?;
    let dt = der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))?;
    let value = if dt.year() < 2050 {
        der::asn1::UtcTime::from_date_time(dt)?.to_der()?
    } else {
        der::asn1::GeneralizedTime::from_date_time(dt).to_der()?
    };
    let mut values = SetOfVec::new();
    values.insert(AttributeValue::from_der(&value)?)?;
    Ok(Attribute { oid: ID_SIGNING_TIME, values })
}

/// The S/MIME message: headers, the content, the signature in base64.
fn multipart(content: &[u8], der: &[u8]) -> Vec<u8> {
    // A boundary made from the content, so that the same content gives the same message.
    let hash = Sha256::digest(content);
    let mut boundary = String::from("----");
    for b in &hash[..16] {
        let _ = write!(boundary, "{b:02X}");
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = Vec::with_capacity(content.len() + b64.len() * 2 + 600);
    let head = format!(
        "MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; \
         micalg=\"sha-256\"; boundary=\"{boundary}\"\r\n\r\nThis is an S/MIME signed message\r\n\r\n--{boundary}\r\n"
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(content);
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: application/x-pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n"
        )
        .as_bytes(),
    );
    for chunk in b64.as_bytes().chunks(64) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n\r\n").as_bytes());
    out
}

/// The private key in `pem`: the first PEM block that is a key.
/// The environment variable holding the passphrase of an encrypted S/MIME key.
pub const SMIME_PASSWORD_ENV: &str = "VMREPO_SMIME_KEY_PASSWORD";

/// The most PBKDF2 iterations an encrypted key may ask for (OpenSSL makes 2048).
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// The most memory scrypt may take for an encrypted key (128 × N × r × p bytes).
const MAX_SCRYPT_BYTES: u64 = 1 << 30;

/// An encrypted PKCS #8 key (PBES2: PBKDF2 or scrypt, AES-CBC), decrypted
/// with `password`, as a PEM `PRIVATE KEY` block. Its cost is checked
/// first: a file asking for billions of iterations is refused, not run.
fn decrypt_pkcs8(file: &Path, der_bytes: &[u8], password: &str) -> Result<Vec<u8>> {
    use pkcs8::pkcs5::EncryptionScheme;
    use pkcs8::pkcs5::pbes2::Kdf;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der_bytes)
        .map_err(|e| bad(file, format!("a malformed encrypted key: {e}")))?;
    match &info.encryption_algorithm {
        EncryptionScheme::Pbes2(p) => match &p.kdf {
            Kdf::Pbkdf2(k) if k.iteration_count > MAX_PBKDF2_ITERATIONS => {
                return Err(bad(
                    file,
                    format!(
                        "its key derivation asks for {} iterations (at most {MAX_PBKDF2_ITERATIONS})",
                        k.iteration_count
                    ),
                ));
            }
            Kdf::Scrypt(k) => {
                let bytes = 128u64
                    .checked_mul(k.cost_parameter)
                    .and_then(|b| b.checked_mul(u64::from(k.block_size)))
                    .and_then(|b| b.checked_mul(u64::from(k.parallelization)));
                if bytes.is_none_or(|b| b > MAX_SCRYPT_BYTES) {
                    return Err(bad(
                        file,
                        format!("its scrypt parameters ask for more than {MAX_SCRYPT_BYTES} bytes"),
                    ));
                }
            }
            _ => {}
        },
        _ => {
            return Err(bad(
                file,
                "encrypted with an old scheme (PBES1): convert it (openssl pkcs8 -topk8 -v2 aes-256-cbc)",
            ));
        }
    }
    let doc = info
        .decrypt(password)
        .map_err(|_| bad(file, "cannot decrypt it: the passphrase is wrong, or the key is damaged"))?;
    let pem = der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, doc.as_bytes())
        .map_err(|e| bad(file, format!("cannot read the decrypted key: {e}")))?;
    Ok(pem.into_bytes())
}

fn read_key(file: &Path, pem: &[u8], password: Option<&str>) -> Result<Key> {
    let text = std::str::from_utf8(pem).map_err(|_| bad(file, "not a PEM file"))?;
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end =
            block["-----BEGIN ".len()..].find("-----").ok_or_else(|| bad(file, "a malformed PEM block"))?;
        let label = &block["-----BEGIN ".len().."-----BEGIN ".len() + label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block.find(&end_marker).ok_or_else(|| bad(file, format!("no end to its {label} block")))?;
        let one = &block[..end + end_marker.len()];
        rest = &block[end + end_marker.len()..];
        let decode = || {
            der::pem::decode_vec(one.as_bytes())
                .map(|(_, d)| d)
                .map_err(|e| bad(file, format!("its {label} block: {e}")))
        };
        match label {
            "PRIVATE KEY" => {
                let d = decode()?;
                if let Ok(k) = <rsa::RsaPrivateKey as pkcs8::DecodePrivateKey>::from_pkcs8_der(&d) {
                    return Ok(Key::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(k))));
                }
                if let Ok(k) = <p256::SecretKey as pkcs8::DecodePrivateKey>::from_pkcs8_der(&d) {
                    return Ok(Key::P256(Box::new(k.into())));
                }
                return Err(bad(file, "an unsupported key: RSA or EC P-256 is expected"));
            }
            "RSA PRIVATE KEY" => {
                let d = decode()?;
                let k = <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_der(&d)
                    .map_err(|e| bad(file, format!("a malformed RSA key: {e}")))?;
                return Ok(Key::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(k))));
            }
            "EC PRIVATE KEY" => {
                let d = decode()?;
                let k = p256::SecretKey::from_sec1_der(&d)
                    .map_err(|_| bad(file, "an unsupported EC key: P-256 is expected"))?;
                return Ok(Key::P256(Box::new(k.into())));
            }
            "ENCRYPTED PRIVATE KEY" => {
                let Some(password) = password else {
                    return Err(bad(
                        file,
                        format!(
                            "an encrypted key: give its passphrase with --smime-key-pass-file or {SMIME_PASSWORD_ENV}"
                        ),
                    ));
                };
                let d = decode()?;
                let plain = decrypt_pkcs8(file, &d, password)?;
                return read_key(file, &plain, None);
            }
            _ if one.contains("Proc-Type: 4,ENCRYPTED") => {
                return Err(bad(
                    file,
                    "a key encrypted the old OpenSSL way: convert it to PKCS #8 \
                     (openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out NEW)",
                ));
            }
            _ => {}
        }
    }
    Err(bad(file, "holds no PEM private key"))
}

/// Refuses a certificate that `openssl smime -verify` would refuse for its
/// purpose: a key usage without digitalSignature or nonRepudiation, an
/// extended key usage without emailProtection.
fn check_usage(file: &Path, cert: &Certificate) -> Result<()> {
    let Some(exts) = &cert.tbs_certificate.extensions else { return Ok(()) };
    for ext in exts {
        if ext.extn_id == der::oid::db::rfc5280::ID_CE_KEY_USAGE {
            let ku = KeyUsage::from_der(ext.extn_value.as_bytes())
                .map_err(|e| bad(file, format!("its key usage: {e}")))?;
            if !ku.0.contains(KeyUsages::DigitalSignature) && !ku.0.contains(KeyUsages::NonRepudiation) {
                return Err(bad(
                    file,
                    "the certificate's key usage does not allow signatures (digitalSignature)",
                ));
            }
        }
        if ext.extn_id == der::oid::db::rfc5280::ID_CE_EXT_KEY_USAGE {
            let eku = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
                .map_err(|e| bad(file, format!("its extended key usage: {e}")))?;
            if !eku.0.iter().any(|o| *o == ID_EMAIL_PROTECTION || *o == ID_ANY_EKU) {
                return Err(bad(
                    file,
                    "the certificate's extended key usage lacks emailProtection: S/MIME readers refuse its signatures",
                ));
            }
        }
    }
    Ok(())
}

/// The first rfc822Name of the subject alternative name.
fn san_email(cert: &Certificate) -> Option<String> {
    let exts = cert.tbs_certificate.extensions.as_ref()?;
    let ext = exts.iter().find(|e| e.extn_id == der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME)?;
    let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).ok()?;
    san.0.into_iter().find_map(|g| match g {
        GeneralName::Rfc822Name(s) => Some(s.to_string()),
        _ => None,
    })
}

/// The first value of attribute `oid` in `name`, as text.
fn attribute(name: &Name, oid: ObjectIdentifier) -> Option<String> {
    name.0.iter().flat_map(|rdn| rdn.0.iter()).find(|a| a.oid == oid).and_then(|a| text(&a.value).ok())
}

/// OpenSSL's short names for the attributes of distinguished names.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.15", "businessCategory"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.41", "name"),
    ("2.5.4.42", "GN"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("2.5.4.97", "organizationIdentifier"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
];

/// A name as OpenSSL writes it on one line and pyOpenSSL's components give
/// it: `/` before each attribute, its short name, `=`, its value as is.
///
/// # Errors
/// An attribute OpenSSL has no short name for here, or a value that is not
/// text (a BMPString): atrope could not compare such a name.
pub fn one_line(name: &Name) -> std::result::Result<String, String> {
    let mut out = String::new();
    for a in name.0.iter().flat_map(|rdn| rdn.0.iter()) {
        let oid = a.oid.to_string();
        let short = SHORT_NAMES
            .iter()
            .find(|(o, _)| *o == oid)
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("the attribute {oid} is not one vmrepo names"))?;
        let value = text(&a.value).map_err(|e| format!("{short}: {e}"))?;
        let _ = write!(out, "/{short}={value}");
    }
    Ok(out)
}

/// A string attribute value's text.
fn text(value: &der::Any) -> std::result::Result<String, String> {
    match value.tag() {
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String | Tag::VisibleString | Tag::TeletexString => {
            let s =
                std::str::from_utf8(value.value()).map_err(|_| "a value that is not UTF-8".to_string())?;
            if s.chars().any(char::is_control) {
                return Err("a value with a control character".into());
            }
            Ok(s.to_string())
        }
        t => Err(format!("a value of type {t}, not text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_written_as_openssl_writes_them_on_one_line() {
        use std::str::FromStr;
        // RFC 4514 strings are written last attribute first.
        let name = Name::from_str("CN=vm.example.org,OU=STAR,O=BNL,DC=example,DC=org").unwrap();
        assert_eq!(one_line(&name).unwrap(), "/DC=org/DC=example/O=BNL/OU=STAR/CN=vm.example.org");
        let odd = Name::from_str("2.5.4.99=x").unwrap();
        assert!(one_line(&odd).unwrap_err().contains("2.5.4.99"));
    }

    #[test]
    fn the_message_is_multipart_signed_with_the_content_as_is() {
        let m = String::from_utf8(multipart(b"{\r\n}", b"\x30\x00")).unwrap();
        assert!(m.starts_with("MIME-Version: 1.0\r\nContent-Type: multipart/signed;"));
        let boundary = m.split("boundary=\"").nth(1).unwrap().split('"').next().unwrap();
        assert!(m.contains(&format!("\r\n--{boundary}\r\n{{\r\n}}\r\n--{boundary}\r\n")));
        assert!(m.ends_with(&format!("--{boundary}--\r\n\r\n")));
    }

    #[test]
    fn keys_that_are_not_usable_are_named() {
        let p = Path::new("k.pem");
        for (pem, why) in [
            ("", "no PEM private key"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "unsupported key"),
            ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n", "no end"),
        ] {
            let Err(e) = read_key(p, pem.as_bytes(), None) else { panic!("{pem} was read") };
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
