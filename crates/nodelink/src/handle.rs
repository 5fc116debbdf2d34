//! The public handle to a link and what keeps the link alive: every [`Link`] clone, and
//! every connection or request (which hold one), shares one [`Handle`]; dropping the last
//! closes the link. The operations on a link are in `link.rs`.

use std::sync::Arc;

use crate::inner::LinkInner;

/// A handle to a link. Cheap to clone; the link closes when the last handle (including
/// every [`Conn`](crate::Conn) and [`Request`](crate::Request)) is dropped, or on [`Link::close`].
///
/// ```no_run
/// # async fn demo() -> nodelink::Result<()> {
/// use nodelink::{Config, Ping, Pong};
/// let link = nodelink::connect("127.0.0.1:5551", Config::default()).await?;
/// let _pong: Pong = link.ask1(&Ping).await?;
/// link.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Link {
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<LinkInner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl Link {
    pub(crate) fn from_inner(inner: Arc<LinkInner>) -> Link {
        Link {
            handle: Arc::new(Handle { inner }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<LinkInner> {
        &self.handle.inner
    }
}
