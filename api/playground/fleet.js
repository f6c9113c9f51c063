// The fleet's public API, as any client sees it: the same routes, the same API key.

const TERMINAL = ['succeeded', 'failed', 'cancelled'];
const WAIT_S = 60;

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export class Fleet {
  constructor(apiKey) {
    this.apiKey = apiKey; // a function: the key field's current value
    this.httpMs = 0; // time spent waiting on HTTP since the last take()
  }

  // Milliseconds spent in requests since the last call.
  take() {
    const ms = this.httpMs;
    this.httpMs = 0;
    return ms;
  }

  async call(method, path, body, contentType) {
    const headers = {};
    const key = this.apiKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    if (contentType) headers['content-type'] = contentType;
    const started = performance.now();
    let reply, text;
    try {
      reply = await fetch(path, { method, headers, body });
      text = await reply.text();
    } finally {
      this.httpMs += performance.now() - started;
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: the status line says enough
    }
    if (!reply.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(reply.status, error.type || 'http_error',
        error.message || `${reply.status} ${reply.statusText}`);
    }
    return { status: reply.status, data };
  }

  // The image file as it is (no base64): its id for the jobs that follow.
  async upload(file) {
    const { data } = await this.call('POST', '/v1/images', file, file.type || 'application/octet-stream');
    return data;
  }

  // Submit and wait in the same request; a job still running when that answer comes
  // is long-polled until it ends. The succeeded job, or an ApiError.
  async run(job) {
    let { data } = await this.call('POST', `/v1/jobs?wait=${WAIT_S}`, JSON.stringify(job), 'application/json');
    while (!TERMINAL.includes(data.status)) {
      ({ data } = await this.call('GET', `/v1/jobs/${data.id}?wait=${WAIT_S}`));
    }
    if (data.status !== 'succeeded') {
      const error = data.error || { type: data.status, message: `the job was ${data.status}` };
      throw new ApiError(200, error.type, error.message);
    }
    return data;
  }
}
