//! The netlink backend: the only code that speaks nf_tables over netlink.
