//! The daemon's side of a holder's socket, blocking: connect and Hello, then attach and read
//! frames on one thread while a [`Sender`] (cloneable, one frame at a time) sends input,
//! resizes and control from others. [`kill`] and [`signal`] use a connection of their own,
//! so they never wait behind input, and work with a holder of any protocol version.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaged_session::holder::{
    ClientHello, Decoder, HolderHello, HolderInfo, SUPPORTED, SignalName, Step, ToClient, ToHolder,
};

/// A connection to a holder that said Hello.
pub struct Client {
    reader: UnixStream,
    decoder: Decoder,
    sender: Sender,
    hello: HolderHello,
}

/// Sends frames to a holder; clones share the connection.
#[derive(Clone)]
pub struct Sender {
    stream: Arc<Mutex<UnixStream>>,
}

impl Sender {
    pub fn send(&self, frame: &ToHolder) -> std::io::Result<()> {
        let mut stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        stream.write_all(&frame.encode())
    }

    pub fn attach(&self, from: u64) -> std::io::Result<()> {
        self.send(&ToHolder::Attach { from })
    }

    pub fn input(&self, bytes: &[u8]) -> std::io::Result<()> {
        for chunk in bytes.chunks(kaged_session::holder::MAX_PAYLOAD) {
            self.send(&ToHolder::Input(chunk.to_vec()))?;
        }
        Ok(())
    }

    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.send(&ToHolder::Resize { rows, cols })
    }

    pub fn signal(&self, sig: SignalName) -> std::io::Result<()> {
        self.send(&ToHolder::Signal { sig })
    }

    pub fn kill(&self, by: &str) -> std::io::Result<()> {
        self.send(&ToHolder::Kill { by: by.into() })
    }

    pub fn detach(&self) -> std::io::Result<()> {
        self.send(&ToHolder::Detach)
    }

    /// Leave `text` for the next client (see [`ToHolder::Note`]).
    pub fn note(&self, text: String) -> std::io::Result<()> {
        self.send(&ToHolder::Note(text))
    }

    pub fn ack_exit(&self) -> std::io::Result<()> {
        self.send(&ToHolder::AckExit)
    }
}

/// The versions this build offers (debug builds obey `KAGED_TEST_CLIENT_PROTOCOL=N`, to
/// play a daemon that speaks only version N).
pub fn offered_versions() -> Vec<u32> {
    #[cfg(debug_assertions)]
    if let Some(v) = std::env::var("KAGED_TEST_CLIENT_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![v];
    }
    SUPPORTED.to_vec()
}

fn broken(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

impl Client {
    /// Connect to the holder at `socket` and say Hello offering every version this build
    /// speaks. `timeout` bounds each read (None: block).
    pub fn connect(socket: &Path, timeout: Option<Duration>) -> std::io::Result<Client> {
        Client::connect_offering(socket, &offered_versions(), timeout)
    }

    /// [`Client::connect`] offering `versions`.
    pub fn connect_offering(
        socket: &Path,
        versions: &[u32],
        timeout: Option<Duration>,
    ) -> std::io::Result<Client> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let sender = Sender {
            stream: Arc::new(Mutex::new(stream.try_clone()?)),
        };
        sender.send(&ToHolder::Hello(ClientHello {
            versions: versions.to_vec(),
            client: crate::client_name(),
        }))?;
        let mut client = Client {
            reader: stream,
            decoder: Decoder::new(),
            sender,
            hello: HolderHello::Refused {
                refused: String::new(),
                versions: Vec::new(),
            },
        };
        match client.read_frame()? {
            ToClient::Hello(hello) => client.hello = hello,
            other => return Err(broken(format!("expected Hello, got {other:?}"))),
        }
        Ok(client)
    }

    /// The holder's Hello.
    pub fn hello(&self) -> &HolderHello {
        &self.hello
    }

    /// What the holder said about its run, when it accepted a version.
    pub fn info(&self) -> Option<&HolderInfo> {
        match &self.hello {
            HolderHello::Accepted(info) => Some(info),
            HolderHello::Refused { .. } => None,
        }
    }

    /// A sender sharing this connection.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// Bound each read (None: block).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.reader.set_read_timeout(timeout)
    }

    /// The next frame (blocking). The holder closing the connection is `UnexpectedEof`.
    pub fn read_frame(&mut self) -> std::io::Result<ToClient> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.decoder.next_to_client() {
                Step::Frame(f) => return Ok(f),
                Step::Error(e) => return Err(broken(e.to_string())),
                Step::Incomplete => {}
            }
            let n = self.reader.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the holder closed the connection",
                ));
            }
            self.decoder.push(&buf[..n]);
        }
    }
}

/// Send one control frame on a connection of its own and wait for its Done (how many
/// processes it reached). Works whatever version the holder speaks: the frame is frozen.
fn control(socket: &Path, frame: ToHolder, timeout: Duration) -> std::io::Result<u64> {
    let mut client = Client::connect(socket, Some(timeout))?;
    client.sender.send(&frame)?;
    loop {
        match client.read_frame()? {
            ToClient::Done { n } => return Ok(n),
            ToClient::Error { code, message } => {
                return Err(std::io::Error::other(format!("{code}: {message}")));
            }
            _ => {}
        }
    }
}

/// Kill the run the holder at `socket` holds; `by` is recorded as who killed it.
pub fn kill(socket: &Path, by: &str, timeout: Duration) -> std::io::Result<u64> {
    control(socket, ToHolder::Kill { by: by.into() }, timeout)
}

/// Send `sig` to every process of the run the holder at `socket` holds.
pub fn signal(socket: &Path, sig: SignalName, timeout: Duration) -> std::io::Result<u64> {
    control(socket, ToHolder::Signal { sig }, timeout)
}
