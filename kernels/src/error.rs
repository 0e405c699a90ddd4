use thiserror::Error;

/// What can go wrong on a device.
#[derive(Debug, Error)]
pub enum AccelError {
    /// The back end was left out of this build.
    #[error("this contrail was built without the `{backend}` feature (rebuild with `--features {backend}`)")]
    NotCompiled { backend: &'static str },
    /// The device asked for is not on this machine.
    #[error("no {backend} device {what}: {reason}")]
    Unavailable {
        backend: &'static str,
        what: String,
        reason: String,
    },
    /// The data or model does not fit what the device path supports.
    #[error("the {backend} device cannot take this job: {reason}")]
    Unsupported {
        backend: &'static str,
        reason: String,
    },
    /// A buffer larger than the device allows.
    #[error("{what} needs {need} bytes on the {backend} device, which allows {limit}")]
    TooLarge {
        backend: &'static str,
        what: String,
        need: u64,
        limit: u64,
    },
    /// The device failed while running.
    #[error("the {backend} device failed: {reason}")]
    Device {
        backend: &'static str,
        reason: String,
    },
}
