// Ping's answer is Pong: asking for a Ping back does not compile.
use nodelink::{Link, Ping};

#[allow(dead_code)]
async fn ask(link: &Link) -> nodelink::Result<()> {
    let _wrong: Ping = link.call(&Ping).await?;
    Ok(())
}

fn main() {}
