//! A small XMPP client over plain TCP (no TLS, as gim's own listeners in the suite), for the
//! ejabberd peer scenarios: stream header, SASL PLAIN (RFC 6120 §6), stream restart, resource
//! bind, initial presence, chat messages and MAM queries (XEP-0313, paged with XEP-0059).
//!
//! Hand-written on quick-xml rather than an XMPP crate: the generator needs a handful of stanzas
//! and a per-connection cost it controls (one reader task, no TLS or DNS machinery); the XMPP
//! client crates bring their own TLS stack and connection manager. Incoming XML is read as a
//! stream of top-level stanzas ([`XmlIn`]), each built into a small tree ([`El`]).

use base64::Engine as _;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Read buffer per connection (stanzas here are a few hundred bytes).
const READ_BUF: usize = 4096;
/// A stanza nested deeper than this is not one the scenarios produce: refuse rather than grow.
const MAX_DEPTH: usize = 32;

/// One element: local name (prefix dropped), attributes by local name, children and text.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<El>,
    pub text: String,
}

impl El {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }

    fn from_start(e: &quick_xml::events::BytesStart<'_>) -> anyhow::Result<El> {
        let mut el = El {
            name: e.local_name().as_ref().to_string(),
            ..Default::default()
        };
        for a in e.attributes() {
            let a = a?;
            el.attrs.push((
                a.key.local_name().as_ref().to_string(),
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?
                    .into_owned(),
            ));
        }
        Ok(el)
    }
}

/// Incoming side of a stream: top-level stanzas one by one. The stream header itself comes out
/// as an element named `stream` without children.
pub struct XmlIn {
    r: quick_xml::Reader<BufReader<OwnedReadHalf>>,
    buf: Vec<u8>,
    stack: Vec<El>,
}

impl XmlIn {
    pub fn new(half: OwnedReadHalf) -> Self {
        Self::on(BufReader::with_capacity(READ_BUF, half))
    }

    fn on(inner: BufReader<OwnedReadHalf>) -> Self {
        let mut r = quick_xml::Reader::from_reader(inner);
        r.config_mut().trim_text(true);
        // The stream element stays open for the whole connection and restarts after SASL.
        r.config_mut().check_end_names = false;
        Self {
            r,
            buf: Vec::new(),
            stack: Vec::new(),
        }
    }

    /// A fresh parser on the same bytes, for the stream restart after SASL success (RFC 6120
    /// §6.4.6): the new stream header starts a new document.
    pub fn restart(self) -> Self {
        Self::on(self.r.into_inner())
    }

    /// The next top-level stanza; `None` when the server closed the stream or the connection.
    pub async fn next(&mut self) -> anyhow::Result<Option<El>> {
        use quick_xml::events::Event;
        loop {
            self.buf.clear();
            let ev = self.r.read_event_into_async(&mut self.buf).await?;
            match ev {
                Event::Start(e) => {
                    let el = El::from_start(&e)?;
                    if self.stack.is_empty() && el.name == "stream" {
                        return Ok(Some(el));
                    }
                    anyhow::ensure!(self.stack.len() < MAX_DEPTH, "stanza nested too deep");
                    self.stack.push(el);
                }
                Event::Empty(e) => {
                    let el = El::from_start(&e)?;
                    match self.stack.last_mut() {
                        Some(top) => top.children.push(el),
                        None => return Ok(Some(el)),
                    }
                }
                Event::Text(t) => {
                    if let Some(top) = self.stack.last_mut() {
                        top.text.push_str(&t.xml10_content());
                    }
                }
                Event::End(_) => match self.stack.pop() {
                    // `</stream:stream>`: the server ends the session.
                    None => return Ok(None),
                    Some(el) => match self.stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => return Ok(Some(el)),
                    },
                },
                Event::Eof => return Ok(None),
                // Declarations, comments, entity references (bodies here are plain ASCII).
                _ => {}
            }
        }
    }

    /// The next stanza that is not a stream header; an error when the stream ends first.
    async fn stanza(&mut self) -> anyhow::Result<El> {
        loop {
            match self.next().await? {
                Some(el) if el.name == "stream" => continue,
                Some(el) => return Ok(el),
                None => anyhow::bail!("the server closed the stream"),
            }
        }
    }
}

/// A signed-in session, split for one reader and one writer task.
pub struct Session {
    pub rx: XmlIn,
    pub tx: OwnedWriteHalf,
    /// The bound full JID.
    pub jid: String,
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// Connects, authenticates `user@domain` with SASL PLAIN, binds `resource` and sends initial
/// presence (without it the server holds messages to the bare JID offline).
pub async fn login(
    src: Option<IpAddr>,
    dst: SocketAddr,
    domain: &str,
    user: &str,
    password: &str,
    resource: &str,
) -> anyhow::Result<Session> {
    let stream = crate::net::connect(src, dst).await?;
    let (r, mut tx) = stream.into_split();
    let mut rx = XmlIn::new(r);
    tx.write_all(header(domain).as_bytes()).await?;
    let features = rx.stanza().await?;
    anyhow::ensure!(
        features.name == "features" && features.child("mechanisms").is_some(),
        "expected SASL mechanisms, got <{}>",
        features.name
    );
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    tx.write_all(
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>")
            .as_bytes(),
    )
    .await?;
    let outcome = rx.stanza().await?;
    anyhow::ensure!(
        outcome.name == "success",
        "SASL PLAIN for {user}: <{}>",
        outcome
            .children
            .first()
            .map_or(outcome.name.as_str(), |c| c.name.as_str())
    );
    let mut rx = rx.restart();
    tx.write_all(header(domain).as_bytes()).await?;
    let features = rx.stanza().await?;
    anyhow::ensure!(
        features.child("bind").is_some(),
        "no resource binding offered after SASL"
    );
    tx.write_all(
        format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        )
        .as_bytes(),
    )
    .await?;
    let bound = rx.stanza().await?;
    let jid = bound
        .child("bind")
        .and_then(|b| b.child("jid"))
        .map(|j| j.text.clone())
        .filter(|_| bound.attr("type") == Some("result"))
        .ok_or_else(|| anyhow::anyhow!("resource bind failed for {user}"))?;
    tx.write_all(b"<presence/>").await?;
    Ok(Session { rx, tx, jid })
}

/// A chat message to a bare JID; `body` must be plain ASCII without markup (the run tags are).
pub fn chat(to: &str, id: u64, body: &str) -> String {
    format!("<message to='{to}' type='chat' id='m{id}'><body>{body}</body></message>")
}

/// A MAM query (urn:xmpp:mam:2) for messages archived since `start` (XEP-0082 date-time), one
/// page of `max` after the RSM id `after`.
pub fn mam_query(iq_id: &str, start: &str, max: usize, after: Option<&str>) -> String {
    let after = after.map_or(String::new(), |a| format!("<after>{a}</after>"));
    format!(
        "<iq type='set' id='{iq_id}'><query xmlns='urn:xmpp:mam:2' queryid='{iq_id}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
         <field var='start'><value>{start}</value></field></x>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>{max}</max>{after}</set></query></iq>"
    )
}

/// `(sender's bare JID, body)` of a MAM result message (`<message><result><forwarded><message>`).
pub fn mam_item(el: &El) -> Option<(&str, &str)> {
    let m = el.child("result")?.child("forwarded")?.child("message")?;
    let from = m.attr("from")?;
    Some((bare(from), m.child("body")?.text.as_str()))
}

pub fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

/// XEP-0082 date-time (UTC, whole seconds) of unix time `secs`.
pub fn datetime(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (tokio::net::TcpStream, XmlIn) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let (c, s) = tokio::join!(tokio::net::TcpStream::connect(a), l.accept());
        let (r, _w) = c.unwrap().into_split();
        std::mem::forget(_w);
        (s.unwrap().0, XmlIn::new(r))
    }

    #[tokio::test]
    async fn reads_stanzas_split_across_writes_and_restarts() {
        let (mut srv, mut rx) = pair().await;
        srv.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='1'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features><succ")
            .await
            .unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap().name, "stream");
        let f = rx.next().await.unwrap().unwrap();
        assert_eq!(f.name, "features");
        assert_eq!(
            f.child("mechanisms")
                .unwrap()
                .child("mechanism")
                .unwrap()
                .text,
            "PLAIN"
        );
        srv.write_all(b"ess xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            .await
            .unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap().name, "success");
        let mut rx = rx.restart();
        srv.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><message from='u1@h/r' type='chat'><body>7:3:99</body></message></stream:stream>")
            .await
            .unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap().name, "stream");
        let m = rx.next().await.unwrap().unwrap();
        assert_eq!(m.attr("from"), Some("u1@h/r"));
        assert_eq!(m.child("body").unwrap().text, "7:3:99");
        assert_eq!(rx.next().await.unwrap(), None, "stream closed");
    }

    #[tokio::test]
    async fn finds_the_archived_message_of_a_mam_result() {
        let (mut srv, mut rx) = pair().await;
        srv.write_all(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><message to='u0@h/r'><result xmlns='urn:xmpp:mam:2' queryid='q' id='17'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='x'/><message from='u1@h/r' to='u0@h' type='chat'><body>1:2:3</body></message></forwarded></result></message>")
            .await
            .unwrap();
        rx.next().await.unwrap();
        let el = rx.next().await.unwrap().unwrap();
        assert_eq!(mam_item(&el), Some(("u1@h", "1:2:3")));
        assert_eq!(el.child("result").unwrap().attr("id"), Some("17"));
    }

    #[test]
    fn formats_utc_datetimes() {
        assert_eq!(datetime(0), "1970-01-01T00:00:00Z");
        assert_eq!(datetime(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(datetime(1_796_307_200), "2026-12-03T14:13:20Z");
    }
}
