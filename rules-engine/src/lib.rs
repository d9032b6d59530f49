//! Rule configs compiled into rules, their evaluation over samples, and the alarm state
//! machine.
//!
//! This crate does no IO and reads no clock: time is passed in. It holds nothing yet; the
//! rules and alarms work fills it.
