//! Command-line flags, as parsed by clap. Validation into library types happens in `commands`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    problems found (verify, lint, name check)
  2    usage error
  3    not a vmrepo repository
  4    no such image, or a file that vanished
  5    the name is already taken (add without --replace, mv), cat -o to an existing file,
       or key generate where the key's files exist
  6    invalid input: a bad name, field, query or setting, an ambiguous name, a FIFO
       or device where a file is wanted, a symbolic link in the way, a key or publish
       folder inside a repository
  7    I/O error
  8    no space left on the device
  9    the repository is locked by another command, or another publish writes to DEST
  10   the SQLite index failed, or --index names a file vmrepo did not make
  11   the image file is malformed, empty, of an unsupported format, disagrees with its
       name or VM folder (add, mv), or is larger than vmrepo reads
  12   reading the image needs a file it references: pass --follow
  13   (HTTP API only: 401) a write without a valid token
  14   (HTTP API only: 403) a write the token or --read-only does not allow
  130  interrupted (nothing half-done is left behind)";

/// Store, catalog and check STAR virtual machine images.
#[derive(Parser, Debug)]
#[command(name = "vmrepo", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// The repository's root folder (default: found from the current folder upward).
    #[arg(long, global = true, env = "VMREPO_REPO", value_name = "DIR", help_heading = "Global options")]
    pub repo: Option<PathBuf>,

    /// The SQLite index file (default: ROOT/.vmrepo/index.sqlite, or the user's
    /// cache folder when the tree is on a network filesystem).
    #[arg(
        long,
        global = true,
        env = "VMREPO_INDEX",
        value_name = "FILE",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub index: Option<PathBuf>,

    /// Print JSON on standard output instead of text (fields: docs/json.md).
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Print only errors.
    #[arg(long, short, global = true, help_heading = "Global options")]
    pub quiet: bool,

    /// Print what vmrepo does (-vv for more).
    #[arg(long, short, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a repository, or adopt an existing tree that holds vm/ (nothing in it is changed).
    Init {
        /// The repository's root (default: the current folder).
        dir: Option<PathBuf>,
    },
    /// Check, parse and format image names.
    #[command(subcommand)]
    Name(NameCommand),
    /// Import an image file (or a folder of one image's files) under its convention name.
    Add(AddArgs),
    /// Hash images again and compare with their records.
    Verify(VerifyArgs),
    /// Find images: FIELD=VALUE, FIELD!=VALUE, FIELD~GLOB, FIELD<VALUE ... (all must hold).
    #[command(
        after_help = "Fields: vm name file kind os osinfo arch bits lib maxsize detail ext size disk_usage parts \
format virtual_size storage kernel sha256 md5 checksum description added added_by verified\n\
Examples: vmrepo find os=sl5.3   vmrepo find lib=sl08e 'maxsize>=4GB'   vmrepo find 'name~*ec2*' added=2026-11"
    )]
    Find {
        /// Expressions; a bare word matches names containing it.
        #[arg(value_name = "EXPR")]
        exprs: Vec<String>,
    },
    /// List every image.
    List,
    /// Everything known of one image.
    Show {
        /// The image: NAME, FILE, VM/NAME or a path.
        name: String,
    },
    /// Totals: images, bytes and maximum sizes, by VM, OS and STAR library.
    Inventory,
    /// Report what breaks the convention: names, sidecars, descriptions.
    Lint,
    /// Remove an image with its sidecars.
    Rm {
        /// The image: NAME, FILE, VM/NAME or a path.
        name: String,
    },
    /// Rename an image (or move it to another VM folder) with its sidecars:
    /// the .checksum rewritten, the .txt's own lines kept.
    Mv {
        /// The image: NAME, FILE, VM/NAME or a path.
        from: String,
        /// The new name: NAME or VM/NAME (a file keeps its extension if none is given).
        to: String,
        /// Rename even where the new name disagrees with the image's content.
        #[arg(long)]
        force: bool,
    },
    /// Rebuild the index from the files.
    Reindex,
    /// What an image file says of itself: format, sizes, allocation, backing
    /// file, snapshots (fields as qemu-img info --output=json).
    Info(ImageArgs),
    /// The allocation of the guest disk, like qemu-img map.
    Map(ImageArgs),
    /// The guest's bytes as a raw disk, to standard output or a file (sparse).
    Cat {
        #[command(flatten)]
        image: ImageArgs,
        /// Write here instead of standard output: a new file (written
        /// under a temporary name, then renamed; not synced, like qemu-img
        /// convert's), or with --force an existing file or disk. Never the
        /// image itself, nor a file in a repository's vm/ folder.
        #[arg(short, long, value_name = "OUT")]
        output: Option<PathBuf>,
        /// Overwrite OUT if it exists (a file is replaced, a device written).
        #[arg(long, requires = "output")]
        force: bool,
    },
    /// Check the image's structure: tables inside the file, no overlapping clusters.
    Check(ImageArgs),
    /// Look inside the guest: partitions, LVM, filesystems, OS, kernels,
    /// architecture, STAR software, accounts, space.
    Inspect {
        #[command(flatten)]
        image: ImageArgs,
        /// The maximum size to check the budget against (default: the name's, or the virtual size).
        #[arg(long = "max-size", value_name = "SIZE")]
        max_size: Option<String>,
    },
    /// Make a small demonstration repository with one image, and show it.
    Demo {
        /// Where (default: ./vmrepo-demo).
        dir: Option<PathBuf>,
        /// Then serve it (the web page and the API) until interrupted.
        #[arg(long)]
        serve: bool,
        /// The address to serve the demonstration on.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080", requires = "serve")]
        listen: String,
    },
    /// Serve the repository over HTTP: the web page, the JSON API, downloads
    /// and, with a token, uploads (docs/serve.md).
    Serve(ServeArgs),
    /// Tokens that allow uploads and deletions through `vmrepo serve`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Keys that sign published catalogs (minisign's format).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Publish images and a signed catalog.json to a folder a plain web
    /// server can serve (docs/distribution.md).
    Publish(PublishArgs),
    /// The minisign public keys whose catalogs `pull` accepts (.vmrepo/trusted/).
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Fetch a published catalog, check its signature, expiry and serial, and
    /// import the images it lists that are not here yet (docs/distribution.md).
    Pull(PullArgs),
    /// Copy a published tree to a folder as it is, checked as pull checks it,
    /// still verifiable with the publisher's signature (docs/distribution.md).
    Mirror(MirrorArgs),
    /// The month's root password of an image, as the specification's
    /// `date '+%y%m SEED=...' | md5sum | base64` command gives it (docs/site.md).
    Password(PasswordArgs),
    /// The SSH public keys of the repository (keys/NAME.pub), published
    /// signed as keys/authorized_keys by `publish` and `serve` (docs/site.md).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A cloud-init seed for each node of a list (NoCloud ISO, plain files or
    /// one EC2 user-data), so that each started copy of IMAGE becomes a node
    /// of its own (docs/site.md).
    Context(ContextArgs),
    /// Convert an image for another VM software, saying first whether it
    /// will boot there (a Xen paravirtual guest to a VM software that needs
    /// a kernel of its own is refused, exit 11, unless --force).
    Convert(ConvertArgs),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Keep an OpenSSH public key (one key; `-` reads standard input).
    Add {
        #[arg(value_name = "FILE|-")]
        file: PathBuf,
        /// The name it is kept under (default: the key's comment, else the file's name, made a name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the keys: name, type, bits, SHA256 fingerprint, comment.
    List,
    /// Remove a key.
    Rm { name: String },
    /// Print the POSIX sh script an image runs at boot and from cron to
    /// fetch the signed list and install it for root and star.
    BootScript(KeysBootScriptArgs),
}

#[derive(Args, Debug)]
pub struct KeysBootScriptArgs {
    /// The list's URL (`https://vm.example.org/keys/authorized_keys`); URL.sig is its RSA signature.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The RSA public key (PEM `PUBLIC KEY`, `key generate --rsa`'s NAME.rsa.pub.pem)
    /// embedded in the script; without it the script reads /etc/vmrepo/keys.pub.pem.
    #[arg(long, value_name = "FILE.pem")]
    pub pubkey: Option<PathBuf>,
    /// The accounts whose ~/.ssh/authorized_keys it installs (repeat) [default: root, star].
    #[arg(long = "user", value_name = "USER")]
    pub users: Vec<String>,
    /// FOR TESTS ONLY: the script installs into DIR/USER/.ssh instead of
    /// each account's home, and does not chown (docs/site.md).
    #[arg(long, value_name = "DIR", hide = true)]
    pub test_home_root: Option<String>,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PasswordArgs {
    #[command(subcommand)]
    pub command: Option<PasswordCommand>,
    /// The month, YYMM (default: this month, UTC).
    #[arg(long, value_name = "YYMM")]
    pub month: Option<String>,
    /// A file whose first line is the seed (else VMREPO_PASSWORD_SEED); it
    /// should be readable by its owner only.
    #[arg(long, value_name = "FILE")]
    pub seed_file: Option<PathBuf>,
    /// `spec`: the specification's (MD5, 11 characters, about 33 bits);
    /// `hmac`: HMAC-SHA-256, 20 characters, about 119 bits (for new images).
    #[arg(long, value_enum, default_value = "spec")]
    pub scheme: PasswordScheme,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PasswordScheme {
    Spec,
    Hmac,
}

#[derive(Subcommand, Debug)]
pub enum PasswordCommand {
    /// Print what an image runs at each boot to set root's password for the
    /// month from a root-only seed file, with chpasswd (docs/site.md).
    BootScript(BootScriptArgs),
}

#[derive(Args, Debug)]
pub struct BootScriptArgs {
    /// The scheme the script computes (as `vmrepo password --scheme`).
    #[arg(long, value_enum, default_value = "spec")]
    pub scheme: PasswordScheme,
    /// Where the seed file is in the image (readable by root only).
    #[arg(long, value_name = "PATH", default_value = "/etc/vmrepo/password-seed")]
    pub seed_path: String,
    /// `sh`: the script alone; `rc-local`: the script and the rc.local line
    /// (SL4/SL5 era); `systemd`: the script and a oneshot unit.
    #[arg(long, value_enum, default_value = "systemd")]
    pub style: BootStyle,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootStyle {
    Sh,
    RcLocal,
    Systemd,
}

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// The published tree: `file:///path`, `http://host:port/prefix` or `https://...`
    pub source: String,
    /// The folder to mirror it to (made if needed; a web server's root).
    pub dest: PathBuf,
    /// The publisher's minisign public key; without it, the keys the
    /// repository (--repo) trusts.
    #[arg(long, value_name = "PUBFILE")]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Trust a minisign public key (the NAME.pub that `key generate` wrote, or its base64 line).
    Add {
        keyfile: PathBuf,
        /// The name it is kept under (default: the file's name without .pub).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the trusted keys.
    List,
    /// No longer trust a key.
    Rm { name: String },
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The published tree: `file:///path`, `http://host:port/prefix`, `https://...`
    /// or `s3://bucket/prefix` (credentials and endpoint from the AWS_* variables)
    pub source: String,
    /// Which images: FIELD=VALUE, FIELD!=VALUE, FIELD~GLOB, FIELD!~GLOB on the
    /// catalog's fields (vm, name, file, os, arch, bits, lib, maxsize, format,
    /// detail, sha256), or a word of the name (default: all).
    #[arg(value_name = "EXPR")]
    pub exprs: Vec<String>,
    /// Check the catalog and say what would be fetched; fetch and record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Accept a catalog that no trusted key signed (images are still checked against it).
    #[arg(long)]
    pub insecure: bool,
    /// Images downloaded at once.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub jobs: u16,
    /// Another base URL serving the same tree (repeat for several): the
    /// catalog and each image are asked of the source, then of each mirror
    /// in order, on an error or a stall.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// Rounds over the source and the mirrors before an image is given up,
    /// waiting 1 s, 2 s, 4 s... between them.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub tries: u32,
    /// Seconds without a byte after which a server has stalled and the next is asked.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Make an Ed25519 key pair in minisign's format: NAME.key (mode 0600,
    /// without a password unless VMREPO_KEY_PASSWORD holds one) and NAME.pub.
    Generate {
        /// The folder to write them in (default: the current folder); never inside a repository.
        #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// The key's file name, without extension.
        #[arg(long, default_value = "vmrepo")]
        name: String,
        /// Also make an OpenPGP key (Ed25519) for the simplestreams and
        /// virt-builder signatures: NAME.openpgp.key (mode 0600),
        /// NAME.openpgp.asc (public, armored) and NAME.openpgp.gpg (public,
        /// a keyring for gpgv --keyring).
        #[arg(long)]
        openpgp: bool,
        /// Also make an RSA key (3072 bits) that signs the SSH key list for
        /// old images (openssl dgst -verify): NAME.rsa.pem (mode 0600) and
        /// NAME.rsa.pub.pem (its public key).
        #[arg(long)]
        rsa: bool,
    },
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The folder to publish to (made if needed; never inside a repository),
    /// or `s3://bucket/prefix` (credentials and endpoint from the AWS_* variables).
    pub dest: PathBuf,
    /// Which images, as `vmrepo find` takes them (default: all).
    #[arg(value_name = "EXPR")]
    pub exprs: Vec<String>,
    /// Where DEST is served from (`https://vm.example.org/star`), written in the catalog.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Another base URL DEST is mirrored at (repeat for several): listed after
    /// --base-url, in this order, in each image's Metalink file (`<file>.meta4`).
    #[arg(long = "mirror", value_name = "URL", requires = "base_url")]
    pub mirrors: Vec<String>,
    /// How long readers trust the catalog: hours, days or weeks (12h, 30d, 2w).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub expires: String,
    /// The minisign secret key that signs the catalog (`vmrepo key generate`);
    /// an encrypted one is unlocked with VMREPO_KEY_PASSWORD.
    #[arg(long, env = "VMREPO_KEY", value_name = "FILE")]
    pub key: PathBuf,
    /// The X.509 certificate (PEM, then its chain if wanted) that signs the
    /// HEPiX image list `image.list` (S/MIME); with --smime-key and --base-url.
    #[arg(long, env = "VMREPO_SMIME_CERT", value_name = "FILE", requires = "smime_key")]
    pub smime_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: RSA or EC P-256; if encrypted,
    /// PKCS #8 with the passphrase from --smime-key-pass-file or
    /// VMREPO_SMIME_KEY_PASSWORD).
    #[arg(long, env = "VMREPO_SMIME_KEY", value_name = "FILE", requires = "smime_cert")]
    pub smime_key: Option<PathBuf>,
    /// A file whose first line is the passphrase of an encrypted --smime-key
    /// (never on the command line).
    #[arg(long, env = "VMREPO_SMIME_KEY_PASS_FILE", value_name = "FILE", requires = "smime_key")]
    pub smime_key_pass_file: Option<PathBuf>,
    /// The OpenPGP secret key (`key generate --openpgp`: NAME.openpgp.key)
    /// that signs the simplestreams .sjson files and virt-builder's index.asc;
    /// without it those are written unsigned. VMREPO_KEY_PASSWORD unlocks it.
    #[arg(long, env = "VMREPO_OPENPGP_KEY", value_name = "FILE")]
    pub openpgp_key: Option<PathBuf>,
    /// The RSA private key (PEM, unencrypted: `key generate --rsa`'s
    /// NAME.rsa.pem) that signs keys/authorized_keys besides minisign.
    #[arg(long, env = "VMREPO_KEYS_RSA_KEY", value_name = "FILE")]
    pub keys_rsa_key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token and print it, once: only its hash is kept.
    Add {
        /// A name for the token (who or what uses it): letters, digits, '.', '_', '@', '-'.
        name: String,
        /// A VM folder it may write to (repeat for several; none: all).
        #[arg(long = "vm", value_name = "VM")]
        vms: Vec<String>,
        /// It is refused from then on: a date (the end of that day, UTC) or a UTC time.
        #[arg(long, value_name = "DATE")]
        expires: Option<String>,
    },
    /// List the tokens (never the tokens themselves).
    List,
    /// Refuse the token from now on (a running server notices at once).
    Revoke { name: String },
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The address and port to listen on (`[::]:8080` for every interface).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Refuse every write (uploads and deletions), whatever the token.
    #[arg(long)]
    pub read_only: bool,
    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The URL people reach the server at (behind a proxy: `https://vm.example.org`),
    /// for the commands the web page shows; by default the host they asked for.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Seconds a client has to send its request headers (and to finish the
    /// TLS handshake) before it is dropped [default: 10].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub header_timeout: Option<Duration>,
    /// Seconds the downloads in flight get to finish after SIGTERM or Ctrl-C [default: 30].
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub grace: Option<Duration>,
    /// Serve a signed catalog for `vmrepo pull` at /catalog.json, signed
    /// with this minisign secret key (`vmrepo key generate`); an encrypted
    /// one is unlocked with VMREPO_KEY_PASSWORD.
    #[arg(long, env = "VMREPO_KEY", value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// How long readers trust each served catalog: hours, days or weeks
    /// (12h, 7d, 2w); it is signed again when half of that has passed.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub catalog_expires: String,
    /// The RSA private key (PEM, unencrypted) that signs /keys/authorized_keys
    /// besides the --sign-key minisign key.
    #[arg(long, env = "VMREPO_KEYS_RSA_KEY", value_name = "FILE")]
    pub keys_rsa_key: Option<PathBuf>,
}

/// A duration in seconds, decimals allowed (`0.5`), up to a day.
fn seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{s}: a number of seconds above 0 and up to 86400 is expected")),
    }
}

#[derive(Subcommand, Debug)]
pub enum NameCommand {
    /// Say exactly what is wrong with each name (exit 1 if any is bad).
    Check {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print the name made of these fields.
    Format {
        #[command(flatten)]
        fields: NameFields,
        /// Name a folder image (no extension).
        #[arg(long, conflicts_with = "ext")]
        folder: bool,
    },
}

/// The fields of a name, as a person types them.
#[derive(Args, Debug, Clone, Default)]
pub struct NameFields {
    /// Operating system: sl4, sl5.3, ubuntu9.10, fedora12, centOS5 ... (any case).
    #[arg(long)]
    pub os: Option<String>,
    /// Instruction set: x86, SPARC, ARM, Alpha, PowerPC, AVR ... or amd64, i686, aarch64.
    #[arg(long)]
    pub arch: Option<String>,
    /// Word size: 8, 16, 32, 64, 128 or 512 (implied by amd64, i686 ...).
    #[arg(long)]
    pub bits: Option<u16>,
    /// STAR library: sl08e (or SL08e); not pro, new, dev: name the version they point to.
    #[arg(long)]
    pub lib: Option<String>,
    /// Maximum size: 500MB, 8GB, 1536GB (8G, 8GiB, 1.5T also accepted; a unit is binary or decimal, whichever the disk is).
    #[arg(long = "max-size", value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Additional detail: letters, digits, '-' and '.'.
    #[arg(long)]
    pub detail: Option<String>,
    /// File extension (default: from the format; img for a raw image).
    #[arg(long)]
    pub ext: Option<String>,
}

impl NameFields {
    /// The library's form of the same fields.
    pub fn to_lib(&self) -> vmrepo_repo::naming::NameFields {
        vmrepo_repo::naming::NameFields {
            os: self.os.clone(),
            arch: self.arch.clone(),
            bits: self.bits,
            lib: self.lib.clone(),
            max_size: self.max_size.clone(),
            detail: self.detail.clone(),
            ext: self.ext.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The image file, or a folder holding the files of one image.
    pub file: PathBuf,
    /// VM software: xen, kvm, virtualBox, vmware (any case), or another like ec2.
    #[arg(long)]
    pub vm: String,
    #[command(flatten)]
    pub fields: NameFields,
    /// Notes for the description.
    #[arg(long, conflicts_with = "notes_file")]
    pub notes: Option<String>,
    /// Read the notes from a file.
    #[arg(long = "notes-file", value_name = "FILE")]
    pub notes_file: Option<PathBuf>,
    /// Replace an image stored under the same name.
    #[arg(long)]
    pub replace: bool,
    /// Rename the file into the repository instead of copying it.
    #[arg(long = "move")]
    pub move_source: bool,
    /// Store the image even where its name disagrees with its content
    /// (extension, maximum size), or its format cannot be read.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Images to verify (default: all).
    pub names: Vec<String>,
    /// Skip images unchanged (size, mtime, inode) since they last verified clean.
    #[arg(long)]
    pub quick: bool,
    /// Also check the MD5 in each .checksum.
    #[arg(long)]
    pub md5: bool,
    /// Images hashed at once (default: the number of cores).
    #[arg(long, short)]
    pub jobs: Option<usize>,
}

/// An image file or a cataloged image.
#[derive(Args, Debug)]
pub struct ImageArgs {
    /// An image file, or the name of an image in the repository.
    pub image: String,
    /// Open files the image references (VMDK extents, backing or data file),
    /// in the image's own folder only.
    #[arg(long)]
    pub follow: bool,
    /// The format, instead of detecting it: raw, iso, qcow2, vmdk, vdi, vhd (or vpc), vhdx.
    #[arg(long, short = 'f', value_name = "FORMAT")]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("dest").required(true).args(["output", "add"])))]
pub struct ConvertArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The VM software the result is for: xen, kvm, virtualBox, vmware, ec2, or another (then -O).
    #[arg(long, value_name = "VM")]
    pub to: String,
    /// The format to write: raw, qcow2, vmdk, vdi, vhd (or vpc), vhdx; by default what VM runs.
    #[arg(short = 'O', long = "output-format", value_name = "FORMAT")]
    pub output_format: Option<String>,
    /// vmdk: monolithicSparse or streamOptimized; vdi, vhd: dynamic or fixed.
    #[arg(long, value_name = "SUBFORMAT")]
    pub subformat: Option<String>,
    /// qcow2: compress every cluster, with zlib (the default) or zstd.
    #[arg(long, num_args = 0..=1, default_missing_value = "zlib", value_name = "ALGORITHM")]
    pub compress: Option<String>,
    /// qcow2: the cluster size, a power of two from 512 to 2M (64k by default).
    #[arg(long, value_name = "BYTES")]
    pub cluster_size: Option<String>,
    /// Write the result here (a new file, written under a temporary name then renamed).
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Import the result into the repository, in vm/VM/ under its convention name.
    #[arg(long)]
    pub add: bool,
    /// With --add: the detail field of the new name (by default the source's).
    #[arg(long, requires = "add")]
    pub detail: Option<String>,
    /// With --add: replace an image stored under the same name.
    #[arg(long, requires = "add")]
    pub replace: bool,
    /// Convert even where the guest will not boot on VM (the verdict is kept in
    /// the description), and overwrite OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ContextArgs {
    /// The image the nodes run: its name in the repository, or a path to it.
    pub image: String,
    /// The nodes: `rcas1..rcas64`, `rcas{01..64}`, `rcas1,rcas5,web2`, mixes,
    /// `@FILE` (one a line, # comments).
    #[arg(long, value_name = "LIST")]
    pub nodes: String,
    /// The DNS domain: each node's fqdn is NODE.DOMAIN.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Static addresses: a CSV with the header node,address,gateway,dns (else DHCP).
    #[arg(long, value_name = "CSV")]
    pub network: Option<PathBuf>,
    /// The network interface: a name (`eth0`, for the sysconfig and ENI
    /// renderers) or a glob matched by name (netplan).
    #[arg(long, value_name = "NAME", default_value = "e*")]
    pub interface: String,
    /// The admin's own #cloud-config, merged in (lists appended, maps merged, its values win).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// Give root and star the repository's SSH keys (`vmrepo keys list`).
    #[arg(long)]
    pub keys: bool,
    /// Set root's password each boot from the month and the seed in
    /// /etc/vmrepo/password-seed (`vmrepo password`), with this scheme.
    #[arg(long, value_enum, value_name = "SCHEME")]
    pub password_scheme: Option<PasswordScheme>,
    /// Put this seed in the user-data (root-only in the guest; the seeds are
    /// written 0600, but the hypervisor and the metadata service can read it).
    #[arg(long, value_name = "FILE", requires = "password_scheme")]
    pub password_seed_file: Option<PathBuf>,
    /// Let star use sudo without a password.
    #[arg(long)]
    pub star_sudo: bool,
    /// nocloud: DIR/NODE.iso (volume cidata); plain: DIR/NODE/{meta-data,user-data,network-config};
    /// ec2: one DIR/user-data naming each copy from its launch index.
    #[arg(long, value_enum, default_value = "nocloud")]
    pub format: ContextFormat,
    /// The folder to write to (made if missing).
    #[arg(long, short = 'o', value_name = "DIR", default_value = "seeds")]
    pub output_dir: PathBuf,
    /// Replace seeds already there.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ContextFormat {
    Nocloud,
    Plain,
    Ec2,
}
