//! `[dav]`: calendars and contacts (CalDAV, CardDAV) on the HTTP and HTTPS listeners.

use serde::Deserialize;

use crate::ByteSize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dav {
    /// Serve /dav/ and the /.well-known/caldav and /.well-known/carddav redirects.
    pub enabled: bool,
    /// Largest event, to-do or contact (one resource) a client may store.
    pub max_resource_size: ByteSize,
    /// Most resources in one calendar or address book.
    pub max_resources: u64,
    /// Most calendars and address books of one account.
    pub max_collections: u64,
    /// Recurrence instances one event is expanded to while a query or a store checks it.
    pub max_instances: usize,
}

impl Default for Dav {
    fn default() -> Self {
        Dav {
            enabled: true,
            max_resource_size: ByteSize(1 << 20),
            max_resources: 10_000,
            max_collections: 50,
            max_instances: 20_000,
        }
    }
}

impl Dav {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_resource_size.0 < 4096 {
            return Err("dav.max_resource_size must be at least 4K".into());
        }
        if self.max_resources == 0 || self.max_collections < 2 {
            return Err(
                "dav.max_resources must be at least 1 and dav.max_collections at least 2 (the default calendar and address book)"
                    .into(),
            );
        }
        if self.max_instances < 100 {
            return Err("dav.max_instances must be at least 100".into());
        }
        Ok(())
    }
}

pub(crate) const RENDER: &str = r#"[dav]
# Calendars and contacts (CalDAV, CardDAV) at /dav/ on the HTTP and HTTPS listeners.
enabled = true
max_resource_size = "1M"       # one event or contact at most
max_resources = 10000          # ... in one calendar or address book
max_collections = 50           # calendars and address books of one account
max_instances = 20000          # recurrences expanded per event while a query checks it
"#;
