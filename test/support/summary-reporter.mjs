// The test output for people: node's spec reporter, then one closing line "N passed, N failed".
import { Transform } from 'node:stream';
import { spec as Spec } from 'node:test/reporters';

export default class Summary extends Transform {
  #spec = new Spec();
  #counts = { passed: 0, failed: 0, skipped: 0 };
  constructor() {
    super({ writableObjectMode: true });
    this.#spec.on('data', (chunk) => this.push(chunk));
  }
  _transform(event, encoding, done) {
    // Leaf tests only (suites report too, as tests with children).
    if ((event.type === 'test:pass' || event.type === 'test:fail') && event.data.details?.type !== 'suite') {
      if (event.data.skip || event.data.todo) this.#counts.skipped++;
      else this.#counts[event.type === 'test:pass' ? 'passed' : 'failed']++;
    }
    this.#spec.write(event, encoding, done);
  }
  _flush(done) {
    this.#spec.end(() => {
      const { passed, failed, skipped } = this.#counts;
      this.push(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
      done();
    });
  }
}
