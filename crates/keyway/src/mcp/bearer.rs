//! The HTTP side of an MCP connection: rmcp's Streamable HTTP client over keyway's
//! reqwest client, with the bearer token asked for on every request (so a refreshed
//! token is picked up at once) and never kept in a config struct that derives `Debug`.

use std::{collections::HashMap, fmt, sync::Arc};

use futures::{future::BoxFuture, stream::BoxStream};
use http::{HeaderName, HeaderValue};
use rmcp::{
    model::ClientJsonRpcMessage,
    transport::{
        auth::AuthError,
        streamable_http_client::{
            StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
            StreamableHttpResponseLimits,
        },
    },
};
use sse_stream::{Error as SseError, Sse};

use oauth2::AccessToken;

use crate::Secret;

/// Where a connection gets the token for its next request.
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    /// The token to send to `uri` now, or `None` to send the request without one
    /// (the server's 401 challenge then says what it takes).
    fn bearer<'a>(&'a self, uri: &'a str) -> BoxFuture<'a, Result<Option<AccessToken>, AuthError>>;
}

/// A fixed token (or none): static API tokens, and tests.
#[derive(Debug, Clone, Default)]
pub struct StaticToken(Option<AccessToken>);

impl StaticToken {
    pub fn new(token: Option<Secret>) -> Self {
        Self(token.map(|t| AccessToken::new(t.expose().to_owned())))
    }
}

impl TokenSource for StaticToken {
    fn bearer<'a>(
        &'a self,
        _uri: &'a str,
    ) -> BoxFuture<'a, Result<Option<AccessToken>, AuthError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// rmcp's `StreamableHttpClient` for keyway: reqwest plus a [`TokenSource`].
#[derive(Clone, Debug)]
pub(crate) struct BearerHttp {
    http: reqwest::Client,
    tokens: Arc<dyn TokenSource>,
    /// Extra headers (API keys and the like), added to every request here rather than
    /// kept in rmcp's transport config, which derives `Debug`.
    headers: Arc<Vec<(HeaderName, Secret)>>,
}

type HttpResult<T> = Result<T, StreamableHttpError<reqwest::Error>>;

impl BearerHttp {
    pub(crate) fn new(
        http: reqwest::Client,
        tokens: Arc<dyn TokenSource>,
        headers: Vec<(HeaderName, Secret)>,
    ) -> Self {
        Self {
            http,
            tokens,
            headers: Arc::new(headers),
        }
    }

    fn with_headers(
        &self,
        mut custom: HashMap<HeaderName, HeaderValue>,
    ) -> HashMap<HeaderName, HeaderValue> {
        for (name, value) in self.headers.iter() {
            if let Ok(mut v) = HeaderValue::from_str(value.expose()) {
                v.set_sensitive(true);
                custom.insert(name.clone(), v);
            }
        }
        custom
    }

    /// The header value rmcp wants: the bare token, sent as `Authorization: Bearer`.
    async fn auth_header(&self, uri: &str) -> HttpResult<Option<String>> {
        let token = self
            .tokens
            .bearer(uri)
            .await
            .map_err(StreamableHttpError::Auth)?;
        Ok(token.map(|t| t.secret().clone()))
    }
}

impl StreamableHttpClient for BearerHttp {
    type Error = reqwest::Error;

    fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = HttpResult<StreamableHttpPostResponse>> + Send + '_ {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            None,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let auth = self.auth_header(&uri).await?;
        self.http
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth,
                self.with_headers(custom_headers),
                limits,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<()> {
        let auth = self.auth_header(&uri).await?;
        self.http
            .delete_session(uri, session_id, auth, self.with_headers(custom_headers))
            .await
    }

    fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = HttpResult<BoxStream<'static, Result<Sse, SseError>>>> + Send + '_
    {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            None,
            custom_headers,
            StreamableHttpResponseLimits::default().max_sse_event_size,
        )
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        let auth = self.auth_header(&uri).await?;
        self.http
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth,
                self.with_headers(custom_headers),
                max_sse_event_size,
            )
            .await
    }
}
