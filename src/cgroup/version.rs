//! The cgroup version, as the controllers see it: which files to use. The
//! version in force is decided once, by [`super::mode::Mode`].

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}
