//! What a site needs to make each started copy of a STAR image a node of its
//! own (the specification's last part). Today: the monthly root password
//! ([`password`]), computed exactly as the specification's shell pipeline
//! computes it, and a stronger scheme for new images; the SSH public keys of
//! the repository ([`keys`]) and the script that installs them on an image.

pub mod boot;
pub mod keys;
pub mod password;
