// A hand-written pair whose request code has the answer bit: `call` does not compile.
use nodelink::{Ask, Link, Pong};

#[derive(serde::Serialize, serde::Deserialize)]
struct NotARequest;
nodelink::serde_message!(NotARequest = 0x8077);

impl Ask for NotARequest {
    type Answer = Pong;
}

fn main() {
    let link: Option<Link> = None;
    if let Some(link) = &link {
        drop(link.call(&NotARequest));
    }
}
