//! nexar-smol driver
