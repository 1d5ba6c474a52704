import { clientAddress, splitExec } from '../../src/service/exec';

describe('regtape replay DIR -- CMD: splitting the command line', () => {
  const node = ['node', 'cli.js'];
  it('only the first -- after replay counts; the rest is the command, -- included', () => {
    expect(splitExec([...node, 'replay', 'a', 'b', '--strict', '--', 'npm', 'test', '--', '-x'])).toEqual({ argv: [...node, 'replay', 'a', 'b', '--strict'], command: ['npm', 'test', '--', '-x'] });
  });
  it('no -- or another subcommand: untouched', () => {
    expect(splitExec([...node, 'replay', 'a'])).toEqual({ argv: [...node, 'replay', 'a'] });
    expect(splitExec([...node, 'verify', 'a', '--', 'b'])).toEqual({ argv: [...node, 'verify', 'a', '--', 'b'] });
  });
  it('nothing after -- is an error', () => {
    expect(() => splitExec([...node, 'replay', 'a', '--'])).toThrow("nothing after '--'");
  });
  it('what the command dials: loopback for a wildcard address', () => {
    expect(clientAddress('0.0.0.0', 5)).toEqual({ url: 'http://127.0.0.1:5', host: '127.0.0.1:5' });
    expect(clientAddress('::', 5)).toEqual({ url: 'http://[::1]:5', host: '[::1]:5' });
    expect(clientAddress('127.0.0.2', 5)).toEqual({ url: 'http://127.0.0.2:5', host: '127.0.0.2:5' });
  });
});
