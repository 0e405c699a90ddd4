//! A reader of Universal Binary JSON (the format XGBoost saves `.ubj` models in) into
//! `serde_json` values, so one importer reads both forms.
//!
//! Every length and count comes from the file, so each is checked against the bytes that
//! remain before anything is allocated: a truncated or hostile file is an error naming
//! the byte offset, never a panic or a huge allocation. Floats that JSON cannot hold (NaN,
//! infinities) become `null`; the importer reads `null` where it expects a number as NaN.

use serde_json::{Map, Number, Value};

/// Nesting deeper than this is refused (a model nests five or six levels).
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("UBJSON at byte {offset}: {reason}")]
pub struct UbjsonError {
    pub offset: usize,
    pub reason: String,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> Result<T, UbjsonError> {
        Err(UbjsonError {
            offset: self.at,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], UbjsonError> {
        if self.bytes.len() - self.at < n {
            return self.err(format!(
                "{n} bytes needed, {} left",
                self.bytes.len() - self.at
            ));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, UbjsonError> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], UbjsonError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// An integer of the type `marker` (big-endian, as the format says).
    fn int_of(&mut self, marker: u8) -> Result<i64, UbjsonError> {
        Ok(match marker {
            b'i' => i8::from_be_bytes(self.array()?) as i64,
            b'U' => u8::from_be_bytes(self.array()?) as i64,
            b'I' => i16::from_be_bytes(self.array()?) as i64,
            b'l' => i32::from_be_bytes(self.array()?) as i64,
            b'L' => i64::from_be_bytes(self.array()?),
            m => return self.err(format!("expected an integer type, found {:?}", m as char)),
        })
    }

    /// A length or count: an integer that must be >= 0 and fit what remains, counting
    /// `min_size` bytes an element.
    fn count(&mut self, min_size: usize) -> Result<usize, UbjsonError> {
        let m = self.byte()?;
        let n = self.int_of(m)?;
        let left = self.bytes.len() - self.at;
        if n < 0 || (n as u64).saturating_mul(min_size.max(1) as u64) > left as u64 {
            return self.err(format!(
                "length {n} does not fit the {left} bytes that remain"
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, UbjsonError> {
        let n = self.count(1)?;
        let at = self.at;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| UbjsonError {
            offset: at,
            reason: "a string is not UTF-8".into(),
        })
    }

    fn float(v: f64) -> Value {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }

    /// The value of type `marker` (already read).
    fn value_of(&mut self, marker: u8, depth: usize) -> Result<Value, UbjsonError> {
        if depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::Number(self.int_of(marker)?.into()),
            b'd' => Self::float(f32::from_be_bytes(self.array()?) as f64),
            b'D' => Self::float(f64::from_be_bytes(self.array()?)),
            b'C' => Value::String((self.byte()? as char).to_string()),
            b'S' | b'H' => {
                let s = self.string()?;
                if marker == b'H' {
                    match s.parse::<f64>() {
                        Ok(v) => Self::float(v),
                        Err(_) => return self.err(format!("bad high-precision number {s:?}")),
                    }
                } else {
                    Value::String(s)
                }
            }
            b'[' => self.array_body(depth)?,
            b'{' => self.object_body(depth)?,
            m => return self.err(format!("unknown type marker {:?}", m as char)),
        })
    }

    /// Optional `$type` and `#count` after an opening bracket.
    fn container_header(&mut self) -> Result<(Option<u8>, Option<usize>), UbjsonError> {
        let mut ty = None;
        if self.peek() == Some(b'$') {
            self.at += 1;
            ty = Some(self.byte()?);
            if self.peek() != Some(b'#') {
                return self.err("a typed container needs a count");
            }
        }
        let mut n = None;
        if self.peek() == Some(b'#') {
            self.at += 1;
            let size = match ty {
                Some(b'i' | b'U' | b'C' | b'T' | b'F' | b'Z') => 1,
                Some(b'I') => 2,
                Some(b'l' | b'd') => 4,
                Some(b'L' | b'D') => 8,
                _ => 1,
            };
            // Values of null and boolean types take no bytes: bound them by a fixed cap.
            let count = if matches!(ty, Some(b'T' | b'F' | b'Z')) {
                let m = self.byte()?;
                let c = self.int_of(m)?;
                if !(0..=1 << 20).contains(&c) {
                    return self.err(format!("count {c} of empty values"));
                }
                c as usize
            } else {
                self.count(size)?
            };
            n = Some(count);
        }
        Ok((ty, n))
    }

    fn array_body(&mut self, depth: usize) -> Result<Value, UbjsonError> {
        let (ty, n) = self.container_header()?;
        let mut out = Vec::with_capacity(n.unwrap_or(0));
        match n {
            Some(n) => {
                for _ in 0..n {
                    let m = match ty {
                        Some(t) => t,
                        None => self.byte()?,
                    };
                    out.push(self.value_of(m, depth + 1)?);
                }
            }
            None => loop {
                let m = self.byte()?;
                if m == b']' {
                    break;
                }
                if m == b'N' {
                    continue;
                }
                out.push(self.value_of(m, depth + 1)?);
            },
        }
        Ok(Value::Array(out))
    }

    fn object_body(&mut self, depth: usize) -> Result<Value, UbjsonError> {
        let (ty, n) = self.container_header()?;
        let mut out = Map::new();
        let mut entry = |r: &mut Self| -> Result<(), UbjsonError> {
            let k = r.string()?;
            let m = match ty {
                Some(t) => t,
                None => r.byte()?,
            };
            let v = r.value_of(m, depth + 1)?;
            out.insert(k, v);
            Ok(())
        };
        match n {
            Some(n) => {
                for _ in 0..n {
                    entry(self)?;
                }
            }
            None => loop {
                match self.peek() {
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    Some(b'N') => self.at += 1,
                    _ => entry(self)?,
                }
            },
        }
        Ok(Value::Object(out))
    }
}

/// Parses one UBJSON value (the whole input).
pub fn parse(bytes: &[u8]) -> Result<Value, UbjsonError> {
    let mut r = Reader { bytes, at: 0 };
    let m = r.byte()?;
    let v = r.value_of(m, 0)?;
    if r.at != bytes.len() {
        return r.err(format!("{} bytes after the value", bytes.len() - r.at));
    }
    Ok(v)
}

/// Whether `bytes` look like UBJSON rather than JSON text (an object whose first key
/// length is a type marker, or an optimised container).
pub fn looks_like_ubjson(bytes: &[u8]) -> bool {
    matches!(bytes, [b'{' | b'[', m, ..] if b"iUIlL$#".contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objects_arrays_and_typed_arrays() {
        // {"a": 1 (int8), "bc": [1.5 (f32), "x"], "t": [$d#U2 0.25 -2.0]}
        let mut b = vec![b'{', b'U', 1, b'a', b'i', 1];
        b.extend([b'U', 2, b'b', b'c', b'[', b'd']);
        b.extend(1.5f32.to_be_bytes());
        b.extend([b'S', b'U', 1, b'x', b']']);
        b.extend([b'U', 1, b't', b'[', b'$', b'd', b'#', b'U', 2]);
        b.extend(0.25f32.to_be_bytes());
        b.extend((-2.0f32).to_be_bytes());
        b.push(b'}');
        assert!(looks_like_ubjson(&b));
        let v = parse(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "bc": [1.5, "x"], "t": [0.25, -2.0]})
        );
    }

    #[test]
    fn nan_is_null_and_large_ints_keep_their_value() {
        let mut b = vec![b'[', b'D'];
        b.extend(f64::NAN.to_be_bytes());
        b.push(b'L');
        b.extend(i64::MIN.to_be_bytes());
        b.push(b']');
        assert_eq!(parse(&b).unwrap(), serde_json::json!([null, i64::MIN]));
    }

    #[test]
    fn hostile_lengths_and_truncation_are_errors() {
        // A typed array declaring 2^62 floats: refused before allocating.
        let mut b = vec![b'[', b'$', b'd', b'#', b'L'];
        b.extend((1i64 << 62).to_be_bytes());
        let e = parse(&b).unwrap_err();
        assert!(e.reason.contains("does not fit"), "{e}");
        // Negative string length.
        assert!(parse(&[b'S', b'i', 0xff]).is_err());
        // Truncated object, unknown marker, trailing bytes, deep nesting.
        assert!(parse(&[b'{', b'U', 1, b'a']).is_err());
        assert!(parse(&[b'q']).is_err());
        assert!(parse(&[b'Z', b'Z']).is_err());
        assert!(parse(&vec![b'['; 1000]).is_err());
        // Every prefix of a valid document fails cleanly.
        let mut ok = vec![b'{', b'U', 1, b'a', b'[', b'$', b'D', b'#', b'i', 2];
        ok.extend(1.0f64.to_be_bytes());
        ok.extend(2.0f64.to_be_bytes());
        ok.push(b'}');
        assert!(parse(&ok).is_ok());
        for n in 0..ok.len() {
            assert!(parse(&ok[..n]).is_err(), "prefix {n}");
        }
    }
}
