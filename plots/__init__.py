"""The figures: plot_curves (metric curves of one or several runs, seeds grouped with a band),
compare_ppo_grpo (PPO against GRPO runs) and render_prompts (a prompt generator's samples drawn)."""
