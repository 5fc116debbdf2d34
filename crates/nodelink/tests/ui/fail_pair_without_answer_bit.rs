// The answer's code lacks the answer bit (0x8000): the declaration does not compile.
#[derive(serde::Serialize, serde::Deserialize)]
struct GetObject;
#[derive(serde::Serialize, serde::Deserialize)]
struct AnswerObject;
nodelink::serde_message!(GetObject = 0x0011 => AnswerObject = 0x0012);

fn main() {}
