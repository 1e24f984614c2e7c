-- vLLM Ghost in Neovim 0.12+: ghost text from your model as you type in insert mode, <Tab> accepts it.
local cmd = { "vllm-ghost", "lsp" }
local settings = { -- as VS Code's vllmGhost.* settings, nested (README "Settings")
  model = { preset = "auto" }, -- or model.path = "Qwen/Qwen3-Coder-30B-A3B-Instruct-FP8" (a hub id or a directory)
}

vim.lsp.config("vllm_ghost", {
  cmd = cmd,
  -- The project's root is the workspace folder: cross-file context reads other files only inside it.
  root_markers = { ".git", "pyproject.toml", "package.json", "Cargo.toml", "go.mod", "Makefile" },
  init_options = settings,
  handlers = {
    ["vllmGhost/status"] = function(_, status)
      if status.state == "error" then
        vim.notify("vLLM Ghost: " .. status.message, vim.log.levels.ERROR)
      end
    end,
  },
})
vim.lsp.enable("vllm_ghost")
vim.lsp.inline_completion.enable()

vim.keymap.set("i", "<Tab>", function()
  if not vim.lsp.inline_completion.get() then
    return "<Tab>"
  end
end, { expr = true, desc = "vLLM Ghost: accept the ghost text" })

vim.api.nvim_create_user_command("VllmGhostRestartModel", function()
  for _, client in ipairs(vim.lsp.get_clients({ name = "vllm_ghost" })) do
    client:exec_cmd({ title = "Restart model", command = "vllmGhost.restartModel" })
  end
end, { desc = "vLLM Ghost: restart the model" })
