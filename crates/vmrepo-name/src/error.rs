use std::fmt;

/// The part of an image name a [`NameError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Field {
    /// The name as a whole (length, characters, number of fields).
    Name,
    /// The VM software folder (`xen`, `kvm`, `virtualBox`, `vmware`, `ec2` ...).
    Vm,
    /// The operating system (`sl5.3`).
    Os,
    /// The instruction set architecture (`x86`).
    Isa,
    /// The instruction set word size (`64`).
    WordSize,
    /// The STAR library version (`sl08e`).
    Lib,
    /// The maximum size (`8GB`).
    MaxSize,
    /// The optional additional detail (`ec2`).
    Detail,
    /// The file extension (`qcow2`).
    Ext,
}

impl Field {
    /// The field's name as the documentation and the `--json` output spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Vm => "vm",
            Field::Os => "os",
            Field::Isa => "arch",
            Field::WordSize => "bits",
            Field::Lib => "lib",
            Field::MaxSize => "maxsize",
            Field::Detail => "detail",
            Field::Ext => "ext",
        }
    }

    /// How a person calls the field in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Vm => "VM software",
            Field::Os => "operating system",
            Field::Isa => "instruction set",
            Field::WordSize => "word size",
            Field::Lib => "STAR library",
            Field::MaxSize => "maximum size",
            Field::Detail => "detail",
            Field::Ext => "extension",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What is wrong with a name or one of its fields.
///
/// Displays as one line: `word size "33": expected one of 8, 16, 32, 64, 128, 512`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    field: Field,
    value: String,
    problem: String,
}

impl NameError {
    pub(crate) fn new(field: Field, value: &str, problem: impl Into<String>) -> Self {
        // Keep the message one line and bounded whatever the input was.
        let mut shown: String = value.chars().take(80).collect();
        if shown.len() < value.len() {
            shown.push_str("...");
        }
        NameError { field, value: shown, problem: problem.into() }
    }

    /// The field at fault.
    pub fn field(&self) -> Field {
        self.field
    }

    /// The text found in that field (shortened to 80 characters).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What is wrong and what was expected.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.field, self.value, self.problem)
    }
}

impl std::error::Error for NameError {}
