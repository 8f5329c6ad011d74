//! A bounded pool of blocking connections: at most `max` open at once, idle ones reused (one
//! idle for a while is checked first), a caller waits up to [`WAIT`] for one to come free, and
//! a connection that failed is dropped rather than returned (the next caller opens a new one).

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::Client;

use super::tls::Tls;

use crate::{Result, StoreError};

/// How long a caller waits for a free connection before it is told storage is failing.
const WAIT: Duration = Duration::from_secs(15);
/// An idle connection older than this is checked with a round trip before it is handed out,
/// so a server restart costs no failed request.
const CHECK_AFTER: Duration = Duration::from_secs(10);

struct State {
    idle: Vec<(Client, Instant)>,
    /// Connections open: idle plus handed out (plus being opened).
    open: usize,
}

pub(super) struct Pool {
    config: postgres::Config,
    tls: Tls,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

/// A connection handed out; back to the pool when dropped (unless it is closed).
pub(super) struct Conn<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Pool {
    pub(super) fn new(config: postgres::Config, tls: Tls, max: usize) -> Pool {
        Pool {
            config,
            tls,
            max: max.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection outside the pool (the advisory lock's).
    pub(super) fn connect(&self) -> std::result::Result<Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }

    pub(super) fn get(&self, place: &str) -> Result<Conn<'_>> {
        let deadline = Instant::now() + WAIT;
        let mut state = self.state();
        loop {
            if let Some((mut client, since)) = state.idle.pop() {
                drop(state);
                if since.elapsed() < CHECK_AFTER || client.is_valid(Duration::from_secs(5)).is_ok()
                {
                    return Ok(Conn {
                        pool: self,
                        client: Some(client),
                    });
                }
                // Lost while idle: forget it and open another in its place.
                drop(client);
                state = self.state();
                state.open -= 1;
                continue;
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(client) => Ok(Conn {
                        pool: self,
                        client: Some(client),
                    }),
                    Err(source) => {
                        self.state().open -= 1;
                        self.freed.notify_one();
                        Err(StoreError::Postgres {
                            place: place.to_string(),
                            source,
                        })
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Busy {
                    place: place.to_string(),
                    waited_secs: WAIT.as_secs(),
                });
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The idle connections, taken out of the pool (to close them).
    pub(super) fn take_idle(&self) -> Vec<Client> {
        let mut state = self.state();
        let idle: Vec<Client> = state.idle.drain(..).map(|(c, _)| c).collect();
        state.open -= idle.len();
        drop(state);
        self.freed.notify_all();
        idle
    }
}

impl Conn<'_> {
    /// Close this connection instead of returning it (it failed: lost, or in doubt).
    pub(super) fn discard(&mut self) {
        if let Some(client) = self.client.take() {
            drop(client);
            self.pool.state().open -= 1;
            self.pool.freed.notify_one();
        }
    }
}

impl Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Some until dropped.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if client.is_closed() {
            drop(client);
            self.pool.state().open -= 1;
        } else {
            self.pool.state().idle.push((client, Instant::now()));
        }
        self.pool.freed.notify_one();
    }
}
