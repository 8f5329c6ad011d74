//! Request building tests.
use super::*;
