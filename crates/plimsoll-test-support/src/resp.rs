//! Just enough RESP to ask a server a question without the client under test.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A reply, flattened: simple strings, errors, integers and bulk strings as
/// text; arrays as their elements joined by newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Ok(String),
    Err(String),
}

pub(crate) fn command(port: u16, args: &[&str], timeout: Duration) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut packed = format!("*{}\r\n", args.len());
    for arg in args {
        packed.push_str(&format!("${}\r\n{}\r\n", arg.len(), arg));
    }
    stream.write_all(packed.as_bytes())?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader)
}

fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(Reply::Ok(rest.to_string())),
        "-" => Ok(Reply::Err(rest.to_string())),
        "$" => {
            let len: i64 = rest.parse().map_err(invalid)?;
            if len < 0 {
                return Ok(Reply::Ok(String::new()));
            }
            let mut buf = vec![0; len as usize + 2];
            reader.read_exact(&mut buf)?;
            buf.truncate(len as usize);
            Ok(Reply::Ok(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let len: i64 = rest.parse().map_err(invalid)?;
            let mut items = Vec::new();
            for _ in 0..len.max(0) {
                match read_reply(reader)? {
                    Reply::Ok(text) => items.push(text),
                    err => return Ok(err),
                }
            }
            Ok(Reply::Ok(items.join("\n")))
        }
        _ => Err(invalid(format!("unexpected reply line {line:?}"))),
    }
}

fn invalid(err: impl ToString) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string())
}
