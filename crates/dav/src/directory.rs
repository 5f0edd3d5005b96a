//! The domain's address book: every account of the account's domain as a vCard, read-only,
//! at `/dav/addressbooks/<user>/directory/`. Made from the directory on each request, never
//! stored.

use postern_store::{CollectionId, DavCollection, DavKind, DavResource, Result, dav_etag};

use crate::Dav;

/// Its name in the address book home; no stored address book may take it.
pub const DIRECTORY: &str = "directory";
/// No stored collection has this id.
pub const DIRECTORY_ID: CollectionId = u64::MAX;

pub fn is_directory(c: &DavCollection) -> bool {
    c.id == DIRECTORY_ID
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(';', "\\;")
}

fn card(address: &str) -> Vec<u8> {
    let local = address.split('@').next().unwrap_or(address);
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:urn:x-postern:account:{a}\r\nFN:{l}\r\nN:;{l};;;\r\n\
         EMAIL;TYPE=INTERNET:{a}\r\nEND:VCARD\r\n",
        a = escape(address),
        l = escape(local)
    )
    .into_bytes()
}

impl Dav<'_> {
    /// The domain's address book and its cards, by name.
    pub(crate) async fn directory(&self) -> Result<(DavCollection, Vec<DavResource>)> {
        let domain = self
            .account
            .address
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let mut cards: Vec<DavResource> = self
            .store
            .account_list()
            .await?
            .into_iter()
            .filter(|a| !a.disabled && a.address.ends_with(&format!("@{domain}")))
            .map(|a| {
                let content = card(&a.address);
                DavResource {
                    collection: DIRECTORY_ID,
                    name: format!("{}.vcf", a.address),
                    etag: dav_etag(&content),
                    component: "VCARD".into(),
                    uid: format!("urn:x-postern:account:{}", a.address),
                    start: None,
                    end: None,
                    modseq: 1,
                    size: content.len() as u64,
                    content,
                }
            })
            .collect();
        cards.sort_by(|a, b| a.name.cmp(&b.name));
        // Its CTag and sync token follow what it lists.
        let all: Vec<u8> = cards.iter().flat_map(|c| c.etag.bytes()).collect();
        let digest = dav_etag(&all);
        let sync = u64::from_str_radix(&digest[..15], 16).unwrap_or(1);
        let c = DavCollection {
            id: DIRECTORY_ID,
            account: self.account.id,
            kind: DavKind::AddressBook,
            name: DIRECTORY.into(),
            display_name: format!("Everyone at {domain}"),
            description: format!("the accounts of {domain}, kept by the server"),
            color: String::new(),
            components: Vec::new(),
            props: Vec::new(),
            sync,
            created: 0,
        };
        Ok((c, cards))
    }

    /// A collection's resources whose span meets `span`, their content only with `content`.
    pub(crate) async fn members(
        &self,
        c: &DavCollection,
        span: Option<(i64, i64)>,
        content: bool,
    ) -> Result<Vec<DavResource>> {
        if is_directory(c) {
            return Ok(self.directory().await?.1);
        }
        self.store.dav_resources(c.id, span, content).await
    }

    pub(crate) async fn member_named(
        &self,
        c: &DavCollection,
        name: &str,
    ) -> Result<Option<DavResource>> {
        if is_directory(c) {
            return Ok(self
                .directory()
                .await?
                .1
                .into_iter()
                .find(|r| r.name == name));
        }
        self.store.dav_resource(c.id, name).await
    }
}
