// A virtualised list with fixed-height rows: only the rows in view (plus
// a small margin) exist in the DOM, recycled as the view scrolls, so a
// list of 100,000 records costs the same to scroll as one of 50.

export class VList {
  // render(rowEl, item, index) fills a recycled row; item is undefined
  // for a row not loaded yet. need(index) asks for rows to be loaded.
  constructor(viewport, spacer, { rowHeight, createRow, render, need }) {
    this.viewport = viewport;
    this.spacer = spacer;
    this.rowHeight = rowHeight;
    this.createRow = createRow;
    this.render = render;
    this.need = need;
    this.items = [];
    this.total = 0;
    this.pool = [];
    this.frame = 0;
    this.viewport.addEventListener('scroll', () => this.schedule(), { passive: true });
    new ResizeObserver(() => this.schedule()).observe(this.viewport);
  }

  setTotal(n) {
    this.total = Math.max(n, this.items.length);
    this.spacer.style.height = `${this.total * this.rowHeight}px`;
    this.schedule();
  }

  // Redraws on the next animation frame (many updates, one paint).
  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(true); });
  }

  // Redraws every visible row now (force: even rows whose item is unchanged).
  draw(force = false) {
    const h = this.rowHeight;
    const top = this.viewport.scrollTop;
    const first = Math.max(0, Math.floor(top / h) - 4);
    const last = Math.min(this.total, Math.ceil((top + this.viewport.clientHeight) / h) + 4);
    const want = Math.max(0, last - first);
    while (this.pool.length < want) {
      const r = this.createRow();
      this.spacer.append(r);
      this.pool.push(r);
    }
    for (let k = 0; k < this.pool.length; k++) {
      const r = this.pool[k];
      const i = first + k;
      if (k >= want) { if (!r.hidden) r.hidden = true; continue; }
      r.hidden = false;
      const item = this.items[i];
      if (force || r._index !== i || r._item !== item) {
        r._index = i;
        r._item = item;
        r.style.transform = `translateY(${i * h}px)`;
        this.render(r, item, i);
      }
    }
    if (last > this.items.length && this.items.length < this.total) this.need(last);
  }

  // Keeps row `i` in view.
  reveal(i) {
    const h = this.rowHeight;
    const top = this.viewport.scrollTop;
    const bottom = top + this.viewport.clientHeight;
    if (i * h < top) this.viewport.scrollTop = i * h;
    else if ((i + 1) * h > bottom) this.viewport.scrollTop = (i + 1) * h - this.viewport.clientHeight;
    this.schedule();
  }

  visibleRows() {
    return Math.max(1, Math.floor(this.viewport.clientHeight / this.rowHeight));
  }
}
