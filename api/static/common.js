// Shared by the rating page and the dashboard: the campaign id, the credential and JSON calls.
// Plain ES module, no build step, nothing fetched from outside the service.

/** The campaign id the server wrote into <body data-campaign="...">. */
export function campaignId() {
  return Number(document.body.dataset.campaign);
}

/**
 * Read a credential from the URL query once, keep it in sessionStorage, and take it out of the
 * address bar (so it does not end up in the history, a screenshot or a shared link).
 * @param {string} param  query parameter name ("token" or "key")
 * @param {string} storageKey  sessionStorage key
 * @returns {string|null}
 */
export function takeCredential(param, storageKey) {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get(param);
  if (fromUrl) {
    sessionStorage.setItem(storageKey, fromUrl);
    url.searchParams.delete(param);
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(storageKey);
}

/** An HTTP answer that was not 2xx; `status` is 0 when the network failed. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(`HTTP ${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

/**
 * Call the service's JSON API with a bearer credential.
 * @param {string} method
 * @param {string} path  e.g. "/v1/campaigns/1/leaderboard"
 * @param {string} credential
 * @param {object} [body]
 * @returns {Promise<{status: number, data: any}>}
 */
export async function api(method, path, credential, body) {
  const init = { method, headers: { Authorization: `Bearer ${credential}` }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, String(error));
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!response.ok) {
    const detail = data && typeof data === "object" && "detail" in data ? data.detail : text;
    throw new ApiError(response.status, detail);
  }
  return { status: response.status, data };
}

/** Create an element with attributes and children (strings become text nodes). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") element.className = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** True when a clip's URI names a video file (by extension); anything else is an image. */
export function isVideo(uri) {
  return /\.(mp4|webm|mov|m4v|ogv|ogg)(\?|#|$)/i.test(uri || "");
}
