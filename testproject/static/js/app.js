// Script of the runserver_plus test project.
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("content").dataset.loaded = "yes";
});
