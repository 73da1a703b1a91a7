// What a record says about TLS, as plain data for the list and the
// detail pane: every value here comes from the network (a certificate
// subject is whatever a hostile peer wrote), so callers insert it as
// text, never as markup. No DOM here: the functions are pure.

// The list's marker for a record: { text, title, bad } or null. An
// intercepted exchange (https:// with TLS facts) is "decrypted" (or, in
// red, "NOT verified" or "upstream failed"); a
// tunnel says whether it was intercepted, passed through (and why) or
// refused.
export function tlsMarker(rec) {
  const t = rec && rec.tls;
  if (!t || typeof t !== 'object') return null;
  if (rec.kind === 'tunnel' || t.state) {
    switch (t.state) {
      case 'intercepted':
        return {
          text: 'intercepted',
          title: `decrypted by sluice${t.sni ? ` (SNI ${t.sni})` : ''}`,
          bad: t.verified === false || !!t.upstream_error,
        };
      case 'passthrough':
        return { text: `passthrough${t.why ? ` (${t.why})` : ''}`, title: t.reason || 'passed through, not decrypted', bad: false };
      case 'refused':
        return { text: `refused${t.why ? ` (${t.why})` : ''}`, title: t.reason || 'the client refused sluice\'s certificate', bad: true };
      default:
        return null;
    }
  }
  if (!String(rec.url || '').startsWith('https://')) return null;
  // Short enough for the column; the tooltip has the rest.
  if (t.upstream_error) return { text: 'upstream failed', title: `decrypted; the upstream's TLS failed: ${t.upstream_error}`, bad: true };
  if (t.verified === false) return { text: 'NOT verified', title: 'decrypted; the upstream\'s certificate was NOT verified', bad: true };
  return { text: 'decrypted', title: `intercepted HTTPS${t.sni ? ` (SNI ${t.sni})` : ''}; upstream verified`, bad: false };
}

const STATES = { intercepted: 'intercepted (decrypted)', passthrough: 'passed through (not decrypted)', refused: 'refused by the client' };

function leg(version, cipher, alpn) {
  return [version, cipher, alpn ? `ALPN ${alpn}` : null].filter(Boolean).join(' · ');
}

function verified(t) {
  return t.verified === false ? 'NOT verified' : 'verified';
}

// The detail pane's TLS rows: [[label, value, bad]], empty when the
// record has no TLS facts.
export function tlsRows(t) {
  if (!t || typeof t !== 'object') return [];
  const rows = [];
  const add = (label, value, bad = false) => {
    if (value != null && value !== '') rows.push([label, String(value), bad]);
  };
  if (t.state) {
    add('tunnel', STATES[t.state] || t.state, t.state === 'refused');
    add('why', t.why);
    add('reason', t.reason);
    if (typeof t.fallback === 'boolean') add('fallback', t.fallback ? 'this client reaches this host passed through for a while (--tls-fallback)' : 'none');
  }
  add('SNI', t.sni === null && !t.state ? '(none sent)' : t.sni);
  if (t.client_version != null || t.client_cipher != null) {
    add('client leg', leg(t.client_version, t.client_cipher, t.client_alpn));
  } else {
    add('client version', t.version);
    add('client ALPN', t.client_alpn);
  }
  if (t.upstream_version != null || t.upstream_cipher != null) {
    add('upstream leg', leg(t.upstream_version, t.upstream_cipher, t.upstream_alpn));
  } else {
    add('upstream ALPN', t.upstream_alpn);
  }
  const c = t.upstream_cert;
  if (c && typeof c === 'object') {
    add('upstream certificate', c.subject);
    add('issued by', c.issuer);
    add('expires', c.not_after);
  }
  // A failed upstream handshake has its own row; "verified" would mislead.
  if (typeof t.verified === 'boolean' && !t.upstream_error) add('upstream verified', verified(t), t.verified === false);
  add('upstream error', t.upstream_error, true);
  return rows;
}
