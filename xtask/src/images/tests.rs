//! Docker integration tests of the images (written next).
