// The network filter box: `host:x status:5xx method:POST client:1.2.3.4
// user:u kind:http error:true min:100ms since:10m`; other words match the
// URL. Turned into the records API's query parameters.

const KEYS = {
  host: 'host', status: 'status', method: 'method', client: 'client', user: 'user',
  kind: 'kind', error: 'error', min: 'min_duration', min_duration: 'min_duration',
  since: 'since', until: 'until', url: 'url',
};

// Returns { params: URLSearchParams, error: string|null }.
export function parseFilter(text) {
  const params = new URLSearchParams();
  const words = [];
  for (const tok of text.trim().split(/\s+/).filter(Boolean)) {
    const m = /^([a-z_]+):(.*)$/i.exec(tok);
    if (m && !tok.includes('://')) {
      const key = KEYS[m[1].toLowerCase()];
      if (!key) return { params, error: `unknown filter field "${m[1]}:" (${Object.keys(KEYS).join(', ')})` };
      if (!m[2]) return { params, error: `"${m[1]}:" needs a value` };
      params.set(key, m[2]);
    } else {
      words.push(tok);
    }
  }
  if (words.length) params.set('url', words.join(' '));
  return { params, error: null };
}
