// A request and its answer, declared together; `call` returns the answer type.
use nodelink::{Link, Ping, Pong};

#[derive(serde::Serialize, serde::Deserialize)]
struct GetObject {
    oid: u64,
}
#[derive(serde::Serialize, serde::Deserialize)]
struct AnswerObject {
    data: Vec<u8>,
}
nodelink::serde_message!(GetObject = 0x0011 => AnswerObject = 0x8011);

#[allow(dead_code)]
async fn fetch(link: &Link) -> nodelink::Result<Vec<u8>> {
    let _pong: Pong = link.call(&Ping).await?;
    let answer: AnswerObject = link.call(&GetObject { oid: 1 }).await?;
    Ok(answer.data)
}

fn main() {}
