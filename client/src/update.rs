//! A changed grant pushed by the server on a live session (PROTOCOL.md,
//! "Update"): what it changes in the grant in force. Pure; `tunnel.rs`
//! applies it to the host through the [`crate::host::HostNetwork`], which
//! keeps the journal of host changes.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use twoway_common::message::Update;

/// What an Update changes: routes as a set (their order means nothing to
/// the kernel), DNS servers and search domains as ordered lists (the first
/// server is asked first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Routes that are new, in the order the server sent them.
    pub added: Vec<IpNetwork>,
    /// Routes that are gone, in the order they were granted.
    pub removed: Vec<IpNetwork>,
    /// DNS servers before and after, when they changed.
    pub dns: Option<(Vec<IpAddr>, Vec<IpAddr>)>,
    /// Search domains before and after, when they changed.
    pub search: Option<(Vec<String>, Vec<String>)>,
}

impl Diff {
    /// What going from `current` to `next` changes.
    pub fn between(current: &Update, next: &Update) -> Diff {
        let only_in = |a: &[IpNetwork], b: &[IpNetwork]| {
            let mut out: Vec<IpNetwork> = Vec::new();
            for r in a {
                if !b.contains(r) && !out.contains(r) {
                    out.push(*r);
                }
            }
            out
        };
        Diff {
            added: only_in(&next.routes, &current.routes),
            removed: only_in(&current.routes, &next.routes),
            dns: changed(&current.dns, &next.dns),
            search: changed(&current.search, &next.search),
        }
    }

    /// Whether the routes changed.
    pub fn routes_changed(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }

    /// Whether the DNS servers or search domains changed.
    pub fn dns_changed(&self) -> bool {
        self.dns.is_some() || self.search.is_some()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.routes_changed() && !self.dns_changed()
    }
}

/// `(before, after)` when they differ.
fn changed<T: Clone + PartialEq>(before: &[T], after: &[T]) -> Option<(Vec<T>, Vec<T>)> {
    (before != after).then(|| (before.to_vec(), after.to_vec()))
}

/// One line for the log: `routes +10.100.0.0/16 -10.1.0.0/16; dns 10.99.0.53 -> 10.99.0.54`.
impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(items: &[T]) -> String {
            if items.is_empty() {
                "(none)".into()
            } else {
                items
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
        let mut parts = Vec::new();
        if self.routes_changed() {
            let routes = self
                .added
                .iter()
                .map(|r| format!("+{r}"))
                .chain(self.removed.iter().map(|r| format!("-{r}")))
                .collect::<Vec<_>>()
                .join(" ");
            parts.push(format!("routes {routes}"));
        }
        if let Some((old, new)) = &self.dns {
            parts.push(format!("dns {} -> {}", list(old), list(new)));
        }
        if let Some((old, new)) = &self.search {
            parts.push(format!("search {} -> {}", list(old), list(new)));
        }
        if parts.is_empty() {
            return f.write_str("nothing");
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(routes: &[&str], dns: &[&str], search: &[&str]) -> Update {
        Update {
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
            dns: dns.iter().map(|d| d.parse().unwrap()).collect(),
            search: search.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn routes_added_and_removed_as_a_set() {
        let old = update(&["10.99.0.0/24", "10.1.0.0/16"], &["10.99.0.53"], &[]);
        let new = update(
            &["10.100.0.0/16", "10.99.0.0/24", "10.100.0.0/16"],
            &["10.99.0.53"],
            &[],
        );
        let d = Diff::between(&old, &new);
        assert_eq!(d.added, vec!["10.100.0.0/16".parse::<IpNetwork>().unwrap()]);
        assert_eq!(d.removed, vec!["10.1.0.0/16".parse::<IpNetwork>().unwrap()]);
        assert!(d.routes_changed() && !d.dns_changed() && !d.is_empty());
        assert_eq!(d.to_string(), "routes +10.100.0.0/16 -10.1.0.0/16");
        // Back again: the mirror image.
        let back = Diff::between(&new, &old);
        assert_eq!((back.added, back.removed), (d.removed, d.added));
    }

    #[test]
    fn the_same_routes_in_another_order_change_nothing() {
        let a = update(&["10.99.0.0/24", "10.1.0.0/16"], &["10.99.0.53"], &["corp"]);
        let b = update(&["10.1.0.0/16", "10.99.0.0/24"], &["10.99.0.53"], &["corp"]);
        let d = Diff::between(&a, &b);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.to_string(), "nothing");
        assert!(Diff::between(&a, &a).is_empty());
    }

    #[test]
    fn dns_and_search_are_ordered_lists() {
        let a = update(&[], &["10.99.0.53", "10.99.0.54"], &["corp.example"]);
        let swapped = update(&[], &["10.99.0.54", "10.99.0.53"], &["corp.example"]);
        let d = Diff::between(&a, &swapped);
        assert!(d.dns_changed() && !d.routes_changed() && d.search.is_none());
        assert_eq!(
            d.to_string(),
            "dns 10.99.0.53 10.99.0.54 -> 10.99.0.54 10.99.0.53"
        );
        let cleared = update(&["10.2.0.0/16"], &[], &[]);
        let d = Diff::between(&a, &cleared);
        assert_eq!(
            d.to_string(),
            "routes +10.2.0.0/16; dns 10.99.0.53 10.99.0.54 -> (none); search corp.example -> (none)"
        );
    }
}
