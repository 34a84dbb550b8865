//! Drop-in behaviour of client.py against the real test bed.

use std::time::Duration;

use crate::fixture::*;

