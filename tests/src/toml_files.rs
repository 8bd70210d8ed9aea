//! Reading and rewriting the TOML files that `pki init` / `pki issue` write,
//! so a test can point them at its own sockets, state and addresses.

use std::path::Path;

/// Parse `path`, let `edit` change it, and write it back.
/// Comments are not kept; keys and values are.
pub fn edit_toml(path: &Path, edit: impl FnOnce(&mut toml::Table)) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}\n{text}", path.display()));
    edit(&mut table);
    std::fs::write(path, toml::to_string(&table).expect("serialise TOML"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The value at a dotted key (`"control.socket"`), if present.
pub fn get<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

/// Set a dotted key (`"control.socket"`), creating missing tables.
pub fn set(table: &mut toml::Table, dotted: &str, value: impl Into<toml::Value>) {
    let (parents, last) = match dotted.rsplit_once('.') {
        Some((p, l)) => (Some(p), l),
        None => (None, dotted),
    };
    let mut t = table;
    for part in parents.into_iter().flat_map(|p| p.split('.')) {
        t = t
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("`{part}` in `{dotted}` is not a table"));
    }
    t.insert(last.to_string(), value.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_get_dotted_keys() {
        let mut t: toml::Table = "listen = \"0.0.0.0:4433\"\n[control]\nsocket = \"/run/x.sock\"\n"
            .parse()
            .unwrap();
        set(&mut t, "control.socket", "/tmp/s.sock");
        set(&mut t, "state.dir", "/tmp/state");
        set(&mut t, "listen", "0.0.0.0:4433");
        assert_eq!(
            get(&t, "control.socket").unwrap().as_str(),
            Some("/tmp/s.sock")
        );
        assert_eq!(get(&t, "state.dir").unwrap().as_str(), Some("/tmp/state"));
        assert!(get(&t, "tunnel.network").is_none());
        let back: toml::Table = toml::to_string(&t).unwrap().parse().unwrap();
        assert_eq!(back, t);
    }
}
