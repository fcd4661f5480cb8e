//! stdin and stdout for the stdio bridge and gateway. `tokio::io::stdin()`/`stdout()`
//! hand every read and write to a blocking thread, which costs two thread hand-offs per
//! message; when they are pipes (as an MCP client starts its servers) they are read and
//! written on the runtime itself, non-blocking. Anything else (a terminal, a file) keeps
//! tokio's blocking versions.

use tokio::io::{AsyncRead, AsyncWrite};

/// The process's stdin.
pub fn input() -> Box<dyn AsyncRead + Unpin + Send> {
    #[cfg(unix)]
    if let Some(rx) = unix::pipe_in() {
        return Box::new(rx);
    }
    Box::new(tokio::io::stdin())
}

/// The process's stdout.
pub fn output() -> Box<dyn AsyncWrite + Unpin + Send> {
    #[cfg(unix)]
    if let Some(tx) = unix::pipe_out() {
        return Box::new(tx);
    }
    Box::new(tokio::io::stdout())
}

#[cfg(unix)]
mod unix {
    use std::{
        fs::File,
        os::{fd::AsFd, unix::fs::MetadataExt},
    };

    use tokio::net::unix::pipe;

    fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Option<File> {
        fd.try_clone_to_owned().ok().map(File::from)
    }

    /// stdin as a non-blocking pipe reader, if it is a pipe.
    pub(super) fn pipe_in() -> Option<pipe::Receiver> {
        // from_file refuses what is not a FIFO.
        pipe::Receiver::from_file(dup(std::io::stdin().as_fd())?).ok()
    }

    /// stdout as a non-blocking pipe writer, if it is a pipe and stderr is not the same
    /// pipe: non-blocking mode belongs to the pipe's open description, which a shared
    /// stderr would inherit, and a log line on a full pipe would then fail.
    pub(super) fn pipe_out() -> Option<pipe::Sender> {
        let out = dup(std::io::stdout().as_fd())?;
        let err = dup(std::io::stderr().as_fd())?;
        let (o, e) = (out.metadata().ok()?, err.metadata().ok()?);
        if o.dev() == e.dev() && o.ino() == e.ino() {
            return None;
        }
        pipe::Sender::from_file(out).ok()
    }
}
