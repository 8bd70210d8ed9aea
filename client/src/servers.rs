//! The client's `server` key: one `host:port`, or a list of them (the nodes
//! of a cluster), with the entry in use. The entries are tried in order, or
//! from a random one on with `server_order = "random"`; a reconnect starts
//! with the node that worked last.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// `server`: the configured entries and the one in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Servers {
    list: Vec<String>,
    current: usize,
}

/// `server_order`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerOrder {
    /// The entries as listed.
    #[default]
    InOrder,
    /// From a random entry on, so that many clients spread over the nodes.
    Random,
}

impl Servers {
    /// Every entry, as configured.
    pub fn all(&self) -> &[String] {
        &self.list
    }

    /// The same list with entry `i` in use.
    pub fn at(&self, i: usize) -> Self {
        Self {
            list: self.list.clone(),
            current: i % self.list.len().max(1),
        }
    }

    /// The order of one round of attempts starting at entry `first`.
    pub fn round(&self, first: usize) -> Vec<usize> {
        let n = self.list.len();
        (0..n).map(|k| (first + k) % n).collect()
    }

    /// Where a first connection starts under `order`.
    pub fn start(&self, order: ServerOrder) -> usize {
        match order {
            ServerOrder::InOrder => 0,
            ServerOrder::Random => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() as usize ^ std::process::id() as usize)
                    .unwrap_or(0);
                nanos % self.list.len().max(1)
            }
        }
    }

    /// The index of the entry in use.
    pub fn current(&self) -> usize {
        self.current
    }
}

impl std::ops::Deref for Servers {
    type Target = str;

    /// The entry in use.
    fn deref(&self) -> &str {
        self.list.get(self.current).map_or("", String::as_str)
    }
}

impl fmt::Display for Servers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl From<String> for Servers {
    fn from(one: String) -> Self {
        Self {
            list: vec![one],
            current: 0,
        }
    }
}

impl From<Vec<String>> for Servers {
    fn from(list: Vec<String>) -> Self {
        Self { list, current: 0 }
    }
}

impl<'de> Deserialize<'de> for Servers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OneOrMany;
        impl<'de> serde::de::Visitor<'de> for OneOrMany {
            type Value = Servers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a \"host:port\" string or a non-empty list of them")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Servers, E> {
                Ok(s.to_owned().into())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Servers, A::Error> {
                let mut list = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    list.push(s);
                }
                if list.is_empty() {
                    return Err(serde::de::Error::invalid_length(0, &self));
                }
                Ok(list.into())
            }
        }
        d.deserialize_any(OneOrMany)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_many_and_rounds() {
        #[derive(Deserialize)]
        struct C {
            server: Servers,
        }
        let one: C = toml::from_str("server = \"vpn:4433\"").unwrap();
        assert_eq!(&*one.server, "vpn:4433");
        let many: C = toml::from_str("server = [\"a:1\", \"b:2\", \"c:3\"]").unwrap();
        assert_eq!(&*many.server, "a:1");
        assert_eq!(&*many.server.at(1), "b:2");
        assert_eq!(many.server.round(1), vec![1, 2, 0]);
        assert!(many.server.start(ServerOrder::Random) < 3);
        assert_eq!(many.server.start(ServerOrder::InOrder), 0);
        for bad in [
            "server = []",
            "server = { host = \"vpn\" }",
            "server = 4433",
        ] {
            let e = toml::from_str::<C>(bad).err().expect(bad).to_string();
            assert!(e.contains("a non-empty list of them"), "{bad}: {e}");
        }
    }
}
