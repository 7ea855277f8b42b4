/// Everything that can go wrong below the state machine and the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    #[error("encoding: {0}")]
    Codec(#[from] bincode::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the log writer thread has stopped; the node must restart")]
    WriterGone,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<Error> for std::io::Error {
    /// openraft's storage traits speak `io::Error`; the message keeps what went wrong.
    fn from(e: Error) -> Self {
        match e {
            Error::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A storage failure as openraft's traits return it, naming what was being done.
pub(crate) fn io_err(what: &str, e: Error) -> std::io::Error {
    let kind = match &e {
        Error::Io(io) => io.kind(),
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, format!("{what}: {e}"))
}
pub(crate) fn sm_err(e: Error) -> std::io::Error {
    io_err("state machine", e)
}
pub(crate) fn log_write_err(e: Error) -> std::io::Error {
    io_err("writing the log", e)
}
pub(crate) fn log_read_err(e: Error) -> std::io::Error {
    io_err("reading the log", e)
}
