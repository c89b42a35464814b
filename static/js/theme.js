// Runs in <head> before the first paint: apply the chosen theme so dark mode never flashes white.
// Order: this browser's choice (toggle), then the profile setting, then the system preference (Pico's default).
(function () {
  var root = document.documentElement;
  var stored = null;
  try { stored = window.localStorage.getItem("agentry-theme"); } catch (e) { /* storage disabled */ }
  var theme = stored || root.getAttribute("data-server-theme");
  if (theme === "light" || theme === "dark") root.setAttribute("data-theme", theme);
})();
