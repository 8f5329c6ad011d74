//! kaged's model providers, with no SDK in between: pure request building ([`build`]) and pure
//! incremental SSE decoding ([`sse`], [`decode`]) for the three drivers of kaged's LLM spec
//! (`anthropic-messages`, `openai-responses`, `openai-completions`), a thin HTTP edge
//! ([`Client`], [`EventStream`]) with connect, request and stall timeouts, and the pure
//! retry delay and cost.
//!
//! ```no_run
//! # async fn demo(endpoint: kaged_llm::Endpoint) -> Result<(), kaged_llm::LlmError> {
//! use kaged_llm::{Client, Event, Message, Request, Timeouts};
//! let client = Client::new(Timeouts::default())?;
//! let request = Request {
//!     system: Some("Be brief.".into()),
//!     messages: vec![Message::User { text: "Hello".into() }],
//!     ..Request::default()
//! };
//! let mut stream = client.stream(&endpoint, &request).await?;
//! while let Some(event) = stream.next().await {
//!     if let Event::Text(text) = event? {
//!         print!("{text}");
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The provider key is a [`kaged_auth::Secret`]: it goes into one header (marked sensitive) and
//! nowhere else; errors scrub it from whatever a provider echoes.

pub mod build;
mod client;
pub mod decode;
mod error;
mod retry;
pub mod sse;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use client::{Client, EventStream};
pub use error::LlmError;
pub use kaged_config::Driver;
pub use retry::{Prices, RetryPolicy, cost};
pub use types::{
    DEFAULT_MAX_OUTPUT_TOKENS, Endpoint, Event, Message, MissingKey, Request, StopReason, Timeouts,
    ToolCall, ToolSpec, Usage,
};
