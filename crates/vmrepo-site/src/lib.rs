//! What a site needs to make each started copy of a STAR image a node of its
//! own (the specification's last part). Today: the monthly root password
//! ([`password`]), computed exactly as the specification's shell pipeline
//! computes it, and a stronger scheme for new images.

pub mod boot;
pub mod context;
pub mod iso;
pub mod keys;
pub mod password;
