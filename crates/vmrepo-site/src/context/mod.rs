//! `vmrepo context`: a cloud-init seed for each node of a list, so that each
//! started copy of one image becomes a node of its own (the specification's
//! last part): [`nodes`] parses the node list, [`network`] the static
//! addresses, [`cloud_config`] writes `meta-data`, `user-data` and
//! `network-config`, [`output`] writes them
//! as ISO images, folders or one EC2 user-data, and [`yaml`] is the careful
//! YAML beneath them.

pub mod cloud_config;
pub mod network;
pub mod nodes;
pub mod output;
pub mod yaml;
