use meridian_types::raft::StorageError;
use openraft::{ErrorSubject, ErrorVerb};

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

impl Error {
    pub fn into_raft(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError {
        StorageError::from_io_error(subject, verb, std::io::Error::other(self.to_string()))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn sm_err(e: Error) -> StorageError {
    e.into_raft(ErrorSubject::StateMachine, ErrorVerb::Write)
}
pub(crate) fn log_write_err(e: Error) -> StorageError {
    e.into_raft(ErrorSubject::Logs, ErrorVerb::Write)
}
pub(crate) fn log_read_err(e: Error) -> StorageError {
    e.into_raft(ErrorSubject::Logs, ErrorVerb::Read)
}
