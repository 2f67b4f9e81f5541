//! Integration tests: the real `vmrepo` binary in temporary repositories.
//! Oracles are real tools (md5sum, sha256sum), never vmrepo's own output.

mod util;

mod add;
mod catalog;
mod context;
mod context_boot;
mod convert;
mod crash;
mod formats;
mod hepix;
mod inspect;
mod iso;
mod issue7;
mod keys;
mod lint;
mod metalink;
mod name;
mod openpgp;
mod output;
mod publish;
mod publish_folders;
mod publish_hostile;
mod publish_kill;
mod publish_more;
mod pull;
mod pull_net;
mod repo;
mod s3;
mod samples;
mod serve;
mod serve_clients;
mod serve_pull;
mod serve_upload;
mod serve_web;
mod site;
mod verify;
