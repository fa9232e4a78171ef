// An ES module: served with a JavaScript content type like app.js.
export const greeting = "Hello from module.mjs";
