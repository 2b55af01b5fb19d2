//! The state file's text in pieces, so a commit reuses the text of every release it did not
//! change instead of serializing the whole history again.

use super::*;

/// The state file as this store last saw it: what it parsed to, and its exact bytes. Made by
/// this store's own commits and by its parses of the file (in a read, or a transaction that
/// wrote nothing).
///
/// A read or a commit must read the file fresh, but when the file still holds exactly these
/// bytes, parsing it again would only rebuild `state`; and after our own commit, a release the
/// next transaction does not change (still the same `Arc`, see [`State::releases`]) serializes
/// to the text it already has. Parsing, comparing and serializing grow with the history while a
/// transaction usually changes one release, so skipping them keeps a commit close to the cost of
/// writing the file. Nothing here is trusted without the byte-for-byte comparison with the file,
/// so a file changed by anyone else is parsed as usual.
pub(super) struct Snapshot {
    pub(super) state: State,
    pub(super) text: StateText,
}

/// The bytes of a state file, kept in pieces: `head`, each release's text in order, then
/// `tail`.
///
/// Serialized by this store ([`serialize_state`]), the pieces are byte for byte what
/// `serde_json::to_vec_pretty(state)` writes plus a newline, and `releases[i]` is the text of
/// `state.releases[i]`, ready to be reused. Read from a file ([`StateText::read`]), the whole file
/// is `head` and there is no release text to reuse.
pub(super) struct StateText {
    /// Everything before the first release, up to and including the `[` of `"releases": [`.
    pub(super) head: Vec<u8>,
    /// `releases[i]`'s text, indented as it sits in the array and preceded by its separator
    /// `,\n    `. The first release is written without that comma (see [`StateText::pieces`]).
    pub(super) releases: Vec<Vec<u8>>,
    /// Everything after the last release, from the `]` to the final newline.
    pub(super) tail: Vec<u8>,
}

impl StateText {
    /// A file's bytes as read, with no release text to reuse.
    pub(super) fn read(bytes: Vec<u8>) -> Self {
        StateText {
            head: bytes,
            releases: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// The file's bytes, in order.
    pub(super) fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        // The first release has no comma before it.
        let first = self.releases.first().map(|text| &text[1..]);
        let rest = self.releases.iter().skip(1).map(Vec::as_slice);
        std::iter::once(&self.head[..])
            .chain(first)
            .chain(rest)
            .chain(std::iter::once(&self.tail[..]))
    }

    /// The file's length in bytes.
    pub(super) fn len(&self) -> usize {
        self.pieces().map(<[u8]>::len).sum()
    }
}

/// Write every piece in order, handing many to each `writev` call, so a long history goes to
/// the file straight from the pieces it is kept in instead of being copied into one buffer.
pub(super) fn write_all_pieces<'a>(
    out: &mut impl Write,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> io::Result<()> {
    // Linux's IOV_MAX: more buffers than this in one call is an error.
    const MAX_BUFFERS: usize = 1024;
    let mut buffers: Vec<IoSlice<'_>> = pieces
        .filter(|piece| !piece.is_empty())
        .map(IoSlice::new)
        .collect();
    let mut rest = &mut buffers[..];
    while !rest.is_empty() {
        let batch = rest.len().min(MAX_BUFFERS);
        match out.write_vectored(&rest[..batch]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The state as pretty-printed JSON plus a newline, byte for byte what
/// `serde_json::to_vec_pretty(state)` writes, in pieces. A release that is still the very `Arc`
/// at the same position in `previous` (the transaction did not change it, see
/// [`State::releases`]) takes its text from there instead of being serialized again.
pub(super) fn serialize_state(
    state: &mut State,
    previous: Option<Snapshot>,
) -> anyhow::Result<StateText> {
    // Everything but the releases, with an empty array to fill in.
    let releases = std::mem::take(&mut state.releases);
    let frame = serde_json::to_vec_pretty(&*state);
    state.releases = releases;
    let frame = frame.context("serializing the state")?;
    // Top-level keys are indented by exactly two spaces and JSON strings never hold a raw
    // newline, so this is the top-level `releases` key and nothing else.
    const EMPTY: &[u8] = b"\n  \"releases\": []";
    let Some(at) = frame.windows(EMPTY.len()).position(|w| w == EMPTY) else {
        anyhow::bail!("serializing the state: no releases array in the document");
    };
    let close = at + EMPTY.len() - 1; // the `]` of `[]`
    let (before, mut before_text) = match previous {
        Some(previous) => (previous.state.releases, previous.text.releases),
        None => (Vec::new(), Vec::new()),
    };
    let mut texts = Vec::with_capacity(state.releases.len());
    for (i, release) in state.releases.iter().enumerate() {
        let unchanged = before.get(i).is_some_and(|b| Arc::ptr_eq(b, release));
        match before_text.get_mut(i).filter(|_| unchanged) {
            Some(text) => texts.push(std::mem::take(text)),
            None => texts.push(release_text(release)?),
        }
    }
    let mut tail = Vec::with_capacity(frame.len() - close + 4);
    if !texts.is_empty() {
        tail.extend_from_slice(b"\n  ");
    }
    tail.extend_from_slice(&frame[close..]);
    tail.push(b'\n');
    Ok(StateText {
        head: frame[..close].to_vec(),
        releases: texts,
        tail,
    })
}

/// One release's text as it sits in the `releases` array, preceded by its separator: one level
/// deeper than a document of its own, so two more spaces of indent on every line.
pub(super) fn release_text(release: &Release) -> anyhow::Result<Vec<u8>> {
    let own = serde_json::to_vec_pretty(release).context("serializing a release")?;
    let lines = own.iter().filter(|b| **b == b'\n').count();
    let mut text = Vec::with_capacity(own.len() + 6 + 4 * lines);
    text.extend_from_slice(b",\n    ");
    for (n, line) in own.split(|b| *b == b'\n').enumerate() {
        if n > 0 {
            text.extend_from_slice(b"\n    ");
        }
        text.extend_from_slice(line);
    }
    Ok(text)
}
