//! medbus
