//! Realistic applications writing during the snapshot and the stream.
