//! nexar-tokio driver
