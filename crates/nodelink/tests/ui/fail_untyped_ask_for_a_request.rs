// The untyped `ask1` checks its answer type too: Ping is a request, not an answer.
use nodelink::{Link, Ping};

async fn ask(link: &Link) -> nodelink::Result<Ping> {
    link.ask1::<Ping, Ping>(&Ping).await
}

fn main() {
    let link: Option<Link> = None;
    if let Some(link) = &link {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _ = runtime.block_on(ask(link));
    }
}
