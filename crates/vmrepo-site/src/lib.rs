//! What a site needs to make each started copy of a STAR image a node of its
//! own (the specification's last part): the monthly root password
//! ([`password`]), computed exactly as the specification's shell pipeline
//! computes it, and a stronger scheme for new images, with the script an image
//! runs at boot to set it ([`boot`]); the SSH public keys of the repository
//! ([`keys`]) and the script that installs them on an image; and a cloud-init
//! seed for each node ([`context`]), written as an ISO 9660 image ([`iso`]).

pub mod boot;
pub mod context;
pub mod iso;
pub mod keys;
pub mod password;
