import { targetOf } from '../../src/service/healthcheck';

describe('the image health check follows the port regtape listens on', () => {
  it('--port and --host on the command line, in both spellings, before --', () => {
    expect(targetOf(['replay', '/fixtures', '--host', '0.0.0.0', '--port', '9000'], {})).toEqual({ host: '127.0.0.1', port: 9000 });
    expect(targetOf(['replay', '/fixtures', '--port=9001', '--host=127.0.0.2'], { REGTAPE_PORT: '7000' })).toEqual({ host: '127.0.0.2', port: 9001 });
    expect(targetOf(['replay', '/f', '--', 'npm', 'test', '--port', '1'], {})).toEqual({ host: '127.0.0.1', port: 8000 });
    expect(targetOf(['record', '--host', '::'], {})).toEqual({ host: '::1', port: 8000 });
  });
  it('else $REGTAPE_PORT, else 8000', () => {
    expect(targetOf(['replay', '/fixtures'], { REGTAPE_PORT: '7000' })).toEqual({ host: '127.0.0.1', port: 7000 });
    expect(targetOf(['replay', '/fixtures'], {})).toEqual({ host: '127.0.0.1', port: 8000 });
  });
});
