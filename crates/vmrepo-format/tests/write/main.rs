//! The writers against qemu-img as the oracle: every source (images qemu-img
//! makes of every format, and the shared samples other hypervisors' tools
//! made) written in every output format, then checked, compared and described
//! by qemu-img, and read back by vmrepo's own readers. One module per writer.

#[global_allocator]
static ALLOC: vmrepo_testkit::Counting = vmrepo_testkit::Counting;

mod common;
mod qcow2;
mod vhdvhdx;
mod vmdkvdi;
