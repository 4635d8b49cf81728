//! A framed connection over any `Read + Write`: [`Conn::read_frame`],
//! [`Conn::send`], and the raw BODY bytes in both directions with a progress
//! callback. EOF in the middle of a frame or a body is an error; EOF between
//! frames is a clean end ([`Conn::read_frame`] returns `None`).

use crate::protocol::frame::{decode, encode, Frame, FrameError};
use crate::protocol::limits::{FRAME_HEADER_LEN, MAX_CONTROL_PAYLOAD};
use crate::secure::{record_error, RecordError, Wire};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;

/// Size of the buffer a sealed body is read from its file into, to be
/// sealed and sent.
pub const BODY_CHUNK: usize = 1 << 20;
/// Size of the buffer raw BODY bytes are read into from the socket: one per
/// receiving session, outside the receiver's memory budget, so kept small
/// (a read from loopback rarely brings more; 1 GiB cold with 1 MiB and with
/// 256 KiB took the same time, paired runs 0.98 x).
pub const RECV_CHUNK: usize = 256 << 10;
/// Bytes handed to sendfile between two progress updates.
const SEND_CHUNK: u64 = 8 << 20;
/// Queued bytes that [`Conn::queue_body`] writes out.
const QUEUE_FLUSH: usize = 256 << 10;

/// What can go wrong on a framed connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer sent bytes that are not a valid frame.
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    /// The peer closed the connection in the middle of a frame or body.
    #[error("connection closed by peer in the middle of {0}")]
    Eof(&'static str),
    /// The peer closed the connection in the middle of a body.
    #[error("connection closed by peer after {got} of the body's {len} bytes")]
    BodyEof {
        /// Body bytes that arrived.
        got: u64,
        /// Body bytes announced.
        len: u64,
    },
    /// The peer reset the connection (it crashed, was stopped, or dropped
    /// the session).
    #[error("connection reset by peer")]
    Reset,
    /// A record of a sealed session failed authentication: the bytes were
    /// changed, dropped, replayed or reordered on the way.
    #[error("{0}")]
    Tampered(RecordError),
    /// The peer sent nothing for longer than the timeout.
    #[error("peer sent nothing for too long (timed out)")]
    Timeout,
    /// A frame or record that started did not complete within the
    /// timeout (seconds): the peer trickles it.
    #[error("a frame started {0} s ago is still not complete: the peer trickles it (timed out)")]
    Stalled(u64),
    /// The local file changed size while its body was being sent.
    #[error("file shrank while it was being sent ({sent} of {expected} bytes)")]
    Shrank {
        /// Bytes sent before EOF.
        sent: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// Any other I/O error on the socket.
    #[error("{0}")]
    Io(io::Error),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        match record_error(&e) {
            Some(RecordError::Tampered(n)) => {
                return ConnError::Tampered(RecordError::Tampered(*n))
            }
            Some(RecordError::Cut) => return ConnError::Eof("an encrypted record"),
            Some(RecordError::Stalled(s)) => return ConnError::Stalled(*s),
            None => {}
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ConnError::Timeout,
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted => ConnError::Reset,
            _ => ConnError::Io(e),
        }
    }
}

/// A stream that can hold a started frame to a deadline (see
/// [`Wire::mid_frame`]); streams without one do nothing.
pub trait FrameClock {
    /// The reader is in the middle of a frame (`true`) or between frames.
    fn mid_frame(&mut self, _on: bool) {}
}

impl FrameClock for Wire {
    fn mid_frame(&mut self, on: bool) {
        Wire::mid_frame(self, on);
    }
}

impl FrameClock for std::net::TcpStream {}

/// A framed connection.
pub struct Conn<S> {
    stream: S,
    rbuf: Box<[u8]>,
    rpos: usize,
    rend: usize,
    wbuf: Vec<u8>,
    body_buf: Vec<u8>,
    /// Body bytes read from a file on their way out (a sealed connection).
    out_buf: Vec<u8>,
    /// The stream was told a frame has started ([`FrameClock`]).
    mid_frame: bool,
}

impl<S: Read + Write + FrameClock> Conn<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Conn {
            stream,
            rbuf: vec![0u8; 2 * (FRAME_HEADER_LEN + MAX_CONTROL_PAYLOAD as usize)]
                .into_boxed_slice(),
            rpos: 0,
            rend: 0,
            wbuf: Vec::with_capacity(4096),
            body_buf: Vec::new(),
            out_buf: Vec::new(),
            mid_frame: false,
        }
    }

    /// Wraps a connected stream whose first bytes were already read:
    /// `buffered` is decoded before anything is read from `stream`.
    pub fn with_buffered(stream: S, buffered: &[u8]) -> Self {
        let mut conn = Conn::new(stream);
        // At most a handshake's worth (4 KiB): it fits the buffer.
        let n = buffered.len().min(conn.rbuf.len());
        conn.rbuf[..n].copy_from_slice(&buffered[..n]);
        conn.rend = n;
        conn
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, and the bytes received but not decoded.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        let rest = self.rbuf[self.rpos..self.rend].to_vec();
        (self.stream, rest)
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.rend - self.rpos
    }

    /// The underlying stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The next frame if it was received whole already (nothing is read
    /// or written).
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, ConnError> {
        let Some((frame, used)) = decode(&self.rbuf[self.rpos..self.rend])? else {
            return Ok(None);
        };
        self.rpos += used;
        if self.mid_frame {
            self.mid_frame = false;
            self.stream.mid_frame(false);
        }
        Ok(Some(frame))
    }

    /// Reads the next frame; `Ok(None)` on a clean EOF between frames.
    /// Frames queued with [`Conn::queue`] are written out before any read
    /// that may wait for the peer.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, ConnError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            // Part of a frame is here: the rest must come within the
            // stream's deadline, however it trickles.
            if self.rend > self.rpos && !self.mid_frame {
                self.mid_frame = true;
                self.stream.mid_frame(true);
            }
            if self.rpos > 0 {
                self.rbuf.copy_within(self.rpos..self.rend, 0);
                self.rend -= self.rpos;
                self.rpos = 0;
            }
            // Answers queued while buffered frames were handled go out
            // before this side waits for more: one write for many frames.
            self.flush()?;
            let n = read_retry(&mut self.stream, &mut self.rbuf[self.rend..])?;
            if n == 0 {
                return if self.rend == 0 {
                    Ok(None)
                } else {
                    Err(ConnError::Eof("a frame"))
                };
            }
            self.rend += n;
        }
    }

    /// Reads the next frame, treating EOF as an error.
    pub fn expect_frame(&mut self) -> Result<Frame, ConnError> {
        self.read_frame()?.ok_or(ConnError::Eof("the session"))
    }

    /// Reads exactly `len` raw body bytes, handing them to `sink` in chunks.
    pub fn read_body(
        &mut self,
        len: u64,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<(), ConnError> {
        let mut left = len;
        let buffered = (self.rend - self.rpos).min(usize::try_from(left).unwrap_or(usize::MAX));
        if buffered > 0 {
            sink(&self.rbuf[self.rpos..self.rpos + buffered]).map_err(ConnError::Io)?;
            self.rpos += buffered;
            left -= buffered as u64;
        }
        if left == 0 {
            return Ok(());
        }
        self.flush()?;
        if self.body_buf.is_empty() {
            self.body_buf = vec![0u8; RECV_CHUNK];
        }
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(RECV_CHUNK);
            let n = read_retry(&mut self.stream, &mut self.body_buf[..want])?;
            if n == 0 {
                return Err(ConnError::BodyEof {
                    got: len - left,
                    len,
                });
            }
            sink(&self.body_buf[..n]).map_err(ConnError::Io)?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Queues a frame without flushing.
    pub fn queue(&mut self, frame: &Frame) {
        encode(frame, &mut self.wbuf);
    }

    /// Queues a BODY frame with its bytes from memory (a small file), and
    /// writes out what is queued once it is [`QUEUE_FLUSH`] bytes or more:
    /// many small bodies go out in one write.
    pub fn queue_body(&mut self, frame: &Frame, data: &[u8]) -> Result<(), ConnError> {
        self.queue(frame);
        self.wbuf.extend_from_slice(data);
        if self.wbuf.len() >= QUEUE_FLUSH {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes raw body bytes the caller read, after what is queued.
    pub fn write_raw(&mut self, data: &[u8]) -> Result<(), ConnError> {
        self.flush()?;
        self.stream.write_all(data)?;
        Ok(())
    }

    /// Ends the session with ERROR `code`: best effort, as the peer may
    /// be gone already (whoever calls it is closing the connection).
    pub fn send_error(&mut self, code: crate::protocol::ErrorCode, message: impl Into<String>) {
        let _ = self.send(&Frame::Error {
            code: code.code(),
            message: message.into(),
        });
    }

    /// Queues a frame and flushes everything queued.
    pub fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        self.queue(frame);
        self.flush()
    }

    /// Writes out every queued frame.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf)?;
            self.wbuf.clear();
        }
        self.stream.flush()?;
        Ok(())
    }
}

impl Conn<Wire> {
    /// [`Conn::write_raw`] for bytes the caller no longer needs: sealed in
    /// place on a sealed connection ([`Wire::send_consuming`]).
    pub fn write_consuming(&mut self, data: &mut [u8]) -> Result<(), ConnError> {
        self.flush()?;
        self.stream.send_consuming(data)?;
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset` as raw body bytes (after
    /// flushing queued frames). On a plain connection with `sendfile(2)`:
    /// the bytes go from the page cache to the socket without passing
    /// through user space. (`io::copy` from a file to a TCP stream does not
    /// do this; measured with strace: 8 KiB reads and writes.) On a sealed
    /// one they are read and sealed in [`BODY_CHUNK`]s.
    pub fn send_body(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<(), ConnError> {
        self.flush()?;
        let Some(fd) = self.stream.plain_fd() else {
            return self.copy_body(file, offset, len, progress);
        };
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let chunk = usize::try_from((end - at).min(SEND_CHUNK)).unwrap_or(usize::MAX);
            let n = match rustix::fs::sendfile(fd, file, Some(&mut at), chunk) {
                Ok(0) => {
                    return Err(ConnError::Shrank {
                        sent: at - offset,
                        expected: len,
                    })
                }
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                    return self.copy_body(file, at, end - at, progress);
                }
                Err(e) => return Err(io::Error::from(e).into()),
            };
            progress(n as u64);
        }
        Ok(())
    }

    /// [`Conn::send_body`] through user space: read, then write (sealed,
    /// if the connection is).
    fn copy_body(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<(), ConnError> {
        if self.out_buf.is_empty() {
            self.out_buf = vec![0u8; BODY_CHUNK];
        }
        let mut sent = 0u64;
        while sent < len {
            let want = usize::try_from(len - sent)
                .unwrap_or(usize::MAX)
                .min(BODY_CHUNK);
            let n = match file.read_at(&mut self.out_buf[..want], offset + sent) {
                Ok(0) => {
                    return Err(ConnError::Shrank {
                        sent,
                        expected: len,
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnError::Io(e)),
            };
            self.stream.send_all(&self.out_buf[..n])?;
            sent += n as u64;
            progress(n as u64);
        }
        Ok(())
    }
}

/// `read` that retries on EINTR.
fn read_retry<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream that reads from one buffer and writes to another, one byte
    /// per read call to exercise partial reads.
    struct Trickle {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1);
            self.input.read(&mut buf[..n])
        }
    }
    impl FrameClock for Trickle {}
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn frames_and_body_survive_one_byte_reads() {
        let mut wire = Vec::new();
        encode(&Frame::End { flags: 0 }, &mut wire);
        encode(
            &Frame::Body {
                id: 1,
                offset: 0,
                length: 5,
            },
            &mut wire,
        );
        wire.extend_from_slice(b"hello");
        encode(&Frame::End { flags: 0 }, &mut wire);
        let mut c = Conn::new(Trickle {
            input: Cursor::new(wire),
            output: Vec::new(),
        });
        assert_eq!(c.expect_frame().expect("frame"), Frame::End { flags: 0 });
        assert!(matches!(
            c.expect_frame(),
            Ok(Frame::Body { length: 5, .. })
        ));
        let mut got = Vec::new();
        c.read_body(5, |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .expect("body");
        assert_eq!(got, b"hello");
        assert_eq!(c.expect_frame().expect("frame"), Frame::End { flags: 0 });
        assert!(c.read_frame().expect("clean eof").is_none());
    }

    #[test]
    fn eof_mid_frame_and_mid_body_are_errors() {
        let mut wire = Vec::new();
        encode(&Frame::Accept { id: 1, offset: 0 }, &mut wire);
        wire.pop();
        let mut c = Conn::new(Trickle {
            input: Cursor::new(wire),
            output: Vec::new(),
        });
        assert!(matches!(c.read_frame(), Err(ConnError::Eof(_))));

        let mut c = Conn::new(Trickle {
            input: Cursor::new(b"abc".to_vec()),
            output: Vec::new(),
        });
        let e = c.read_body(10, |_| Ok(())).expect_err("EOF mid-body");
        assert!(matches!(e, ConnError::BodyEof { got: 3, len: 10 }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "connection closed by peer after 3 of the body's 10 bytes"
        );
        let reset: ConnError = io::Error::from(io::ErrorKind::BrokenPipe).into();
        assert_eq!(reset.to_string(), "connection reset by peer");
    }
}
