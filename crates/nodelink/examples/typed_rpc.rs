//! A typed RPC service over a link: an object store with three request types, served by
//! `Handlers`, called with deadlines, and shut down gracefully.
//!
//! Run it with `cargo run -p nodelink --example typed_rpc`. It starts the server and a
//! client in one process on 127.0.0.1, shows each kind of outcome a caller can match on
//! (an answer, the application's Error, a deadline, a refusal after shutdown), and exits.
//!
//! What to look at:
//! * `serde_message!(Request = code => Answer = code)` declares a request and its answer;
//!   `link.call(&request)` returns that answer type, checked by the compiler;
//! * a handler is an async closure returning `Result<Answer, ErrorMessage>`;
//! * `Config::with_ask_timeout` bounds every call; `call_within` bounds one;
//! * cancelling the `CancellationToken` stops the server: requests under way are answered,
//!   new ones are refused (`ErrorKind::Refused`), and `serve_listener` returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodelink::{Config, ErrorCode, ErrorKind, ErrorMessage, Handlers};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Stores an object under an id.
#[derive(Serialize, Deserialize, Debug)]
struct StoreObject {
    oid: u64,
    data: Vec<u8>,
}
/// The answer to [`StoreObject`]: the store's size afterwards.
#[derive(Serialize, Deserialize, Debug)]
struct AnswerStored {
    objects: usize,
}
nodelink::serde_message!(StoreObject = 0x0201 => AnswerStored = 0x8201);

/// Fetches an object by id.
#[derive(Serialize, Deserialize, Debug)]
struct GetObject {
    oid: u64,
}
/// The answer to [`GetObject`].
#[derive(Serialize, Deserialize, Debug)]
struct AnswerObject {
    data: Vec<u8>,
}
nodelink::serde_message!(GetObject = 0x0202 => AnswerObject = 0x8202);

/// Rebuilds the store's index: a slow request, to show deadlines.
#[derive(Serialize, Deserialize, Debug)]
struct Reindex;
/// The answer to [`Reindex`].
#[derive(Serialize, Deserialize, Debug)]
struct AnswerReindexed;
nodelink::serde_message!(Reindex = 0x0203 => AnswerReindexed = 0x8203);

type Store = Arc<Mutex<HashMap<u64, Vec<u8>>>>;

/// The server's handlers: one per request type.
fn handlers(store: Store) -> Handlers {
    let for_store = store.clone();
    Handlers::new()
        .on(move |req: StoreObject| {
            let objects = {
                let mut objects = for_store.lock().unwrap();
                objects.insert(req.oid, req.data);
                objects.len()
            };
            async move { Ok(AnswerStored { objects }) }
        })
        .on(move |req: GetObject| {
            let found = store.lock().unwrap().get(&req.oid).cloned();
            async move {
                match found {
                    Some(data) => Ok(AnswerObject { data }),
                    None => Err(ErrorMessage::new(
                        ErrorCode::OID_NOT_FOUND,
                        format!("no object {}", req.oid),
                    )),
                }
            }
        })
        .on(|_: Reindex| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(AnswerReindexed)
        })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: any link listener (TCP here; `bind_tls` and `bind_kcp` work the same).
    let listener = nodelink::bind("127.0.0.1:0", Config::default()).await?;
    let addr = listener.local_addr();
    println!("server listening on {addr}");
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        let handlers = handlers(Store::default());
        async move { handlers.serve_listener(listener, &stop).await }
    });

    // The client: every call has a 2 s deadline unless it says otherwise.
    let config = Config::default().with_ask_timeout(Duration::from_secs(2));
    let link = nodelink::connect(addr, config).await?;

    let stored = link
        .call(&StoreObject {
            oid: 7,
            data: b"hello".to_vec(),
        })
        .await?;
    println!("stored object 7: the store holds {}", stored.objects);
    let object = link.call(&GetObject { oid: 7 }).await?;
    println!(
        "object 7 is {:?}",
        String::from_utf8_lossy(&object.data).as_ref()
    );

    // The application's Error: kind Peer, with the server's code and text.
    let missing = link.call(&GetObject { oid: 8 }).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Peer);
    let reason = missing.peer_error().expect("the server's Error");
    println!("object 8: {} ({})", reason.message, reason.code);

    // A deadline shorter than the work: kind DeadlineExceeded; the link goes on.
    let late = link
        .call_within(&Reindex, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(late.kind(), ErrorKind::DeadlineExceeded);
    println!("reindex with a 100 ms deadline: {late}");
    link.call(&Reindex).await?;
    println!("reindex within the default 2 s deadline: done");

    // Graceful shutdown: the server answers what it started, then refuses and returns.
    let under_way = tokio::spawn({
        let link = link.clone();
        async move { link.call(&Reindex).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    match under_way.await? {
        Ok(AnswerReindexed) => println!("the reindex under way at shutdown was answered"),
        // On a very slow machine the request may reach the server after the stop.
        Err(e) if e.kind() == ErrorKind::Refused => println!("the reindex came too late: {e}"),
        Err(e) => return Err(e.into()),
    }
    server.await??;
    match link.call(&GetObject { oid: 7 }).await {
        Err(e) if e.kind() == ErrorKind::Refused || e.is_link_gone() => {
            println!("after shutdown: {e}")
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    link.close().await;
    Ok(())
}
